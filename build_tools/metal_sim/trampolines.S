/* metal-sim: objc_msgSend, objc_msgSend_fpret and objc_msgSend_stret for x86-64 SysV.
 *
 * metal-cpp casts these to the exact function type at every call site, so the
 * arguments arrive exactly as for a direct call of the implementation (IMP):
 * integer/pointer arguments in rdi rsi rdx rcx r8 r9, floating point in
 * xmm0-7, al = number of vector registers for variadic callees, larger structs
 * (MTL::Size, 24 bytes) on the stack. Each trampoline saves all of them, asks
 * metalsim_lookup(receiver, selector) for the IMP, restores them and
 * tail-jumps, so the stack the IMP sees is the caller's and the IMP returns
 * straight to the caller (also for exceptions unwinding through it).
 *
 * Messages to nil return zero (rax, rdx, xmm0, xmm1), as Apple's runtime does.
 * _stret: the hidden struct-return pointer is in rdi, receiver in rsi,
 * selector in rdx. A nil receiver leaves the struct untouched (documented in
 * SEMANTICS.md; metal-cpp never sends _stret messages to nil in MLX).
 * _fpret: on x86-64 Apple uses it only for long double; metal-cpp uses it for
 * every floating point return, which lands in xmm0 like any other IMP.
 */

    .text

/* Frame: 7 integer registers (56 bytes) + 8 xmm registers (128 bytes) = 184,
 * padded to 192. After `push %rbp` the stack is 16-byte aligned; 192 keeps it. */
.macro SAVE_ARGS
    .cfi_remember_state
    push    %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_offset %rbp, -16
    mov     %rsp, %rbp
    .cfi_def_cfa_register %rbp
    sub     $192, %rsp
    mov     %rdi, 0(%rsp)
    mov     %rsi, 8(%rsp)
    mov     %rdx, 16(%rsp)
    mov     %rcx, 24(%rsp)
    mov     %r8, 32(%rsp)
    mov     %r9, 40(%rsp)
    mov     %rax, 48(%rsp)
    movdqu  %xmm0, 64(%rsp)
    movdqu  %xmm1, 80(%rsp)
    movdqu  %xmm2, 96(%rsp)
    movdqu  %xmm3, 112(%rsp)
    movdqu  %xmm4, 128(%rsp)
    movdqu  %xmm5, 144(%rsp)
    movdqu  %xmm6, 160(%rsp)
    movdqu  %xmm7, 176(%rsp)
.endm

.macro RESTORE_ARGS_AND_JUMP
    mov     %rax, %r11
    mov     0(%rsp), %rdi
    mov     8(%rsp), %rsi
    mov     16(%rsp), %rdx
    mov     24(%rsp), %rcx
    mov     32(%rsp), %r8
    mov     40(%rsp), %r9
    mov     48(%rsp), %rax
    movdqu  64(%rsp), %xmm0
    movdqu  80(%rsp), %xmm1
    movdqu  96(%rsp), %xmm2
    movdqu  112(%rsp), %xmm3
    movdqu  128(%rsp), %xmm4
    movdqu  144(%rsp), %xmm5
    movdqu  160(%rsp), %xmm6
    movdqu  176(%rsp), %xmm7
    leave
    .cfi_restore_state
    jmp     *%r11
.endm

    .globl  objc_msgSend
    .type   objc_msgSend, @function
objc_msgSend:
    .cfi_startproc
    test    %rdi, %rdi
    jz      .Lnil_return
    SAVE_ARGS
    /* rdi = receiver, rsi = selector already */
    call    metalsim_lookup@PLT
    RESTORE_ARGS_AND_JUMP
.Lnil_return:
    xor     %eax, %eax
    xor     %edx, %edx
    pxor    %xmm0, %xmm0
    pxor    %xmm1, %xmm1
    ret
    .cfi_endproc
    .size   objc_msgSend, .-objc_msgSend

    .globl  objc_msgSend_fpret
    .type   objc_msgSend_fpret, @function
objc_msgSend_fpret:
    .cfi_startproc
    test    %rdi, %rdi
    jz      .Lnil_fpret
    SAVE_ARGS
    call    metalsim_lookup@PLT
    RESTORE_ARGS_AND_JUMP
.Lnil_fpret:
    xor     %eax, %eax
    xor     %edx, %edx
    pxor    %xmm0, %xmm0
    pxor    %xmm1, %xmm1
    ret
    .cfi_endproc
    .size   objc_msgSend_fpret, .-objc_msgSend_fpret

    .globl  objc_msgSend_stret
    .type   objc_msgSend_stret, @function
objc_msgSend_stret:
    .cfi_startproc
    test    %rsi, %rsi
    jz      .Lnil_stret
    SAVE_ARGS
    mov     %rsi, %rdi
    mov     %rdx, %rsi
    call    metalsim_lookup@PLT
    RESTORE_ARGS_AND_JUMP
.Lnil_stret:
    mov     %rdi, %rax
    ret
    .cfi_endproc
    .size   objc_msgSend_stret, .-objc_msgSend_stret

    .section .note.GNU-stack,"",@progbits
