// metal-sim: the Foundation classes metal-cpp and MLX use (NSString, NSError,
// NSArray, NSURL). Convenience constructors return autoreleased objects,
// alloc/init/new/copy return +1, as in Foundation.

#include "sim.hpp"

#include <cstring>
#include <vector>

namespace metalsim {

namespace {

struct String : Obj {
  std::string s;
};
struct Error : Obj {
  Obj* domain{nullptr};
  long code{0};
  Obj* description{nullptr};
  ~Error() {
    release(domain);
    release(description);
  }
};
struct Array : Obj {
  std::vector<Obj*> items;
  ~Array() {
    for (Obj* o : items) {
      release(o);
    }
  }
};
struct URL : Obj {
  std::string path;
};

SimClass* g_string = nullptr;
SimClass* g_error = nullptr;
SimClass* g_array = nullptr;
SimClass* g_url = nullptr;

String* as_string(Obj* o, const char* where) {
  if (!o) {
    return nullptr;
  }
  zombie_check_arg(o, where);
  bool ok = false;
  for (SimClass* c = o->isa; c; c = c->super) {
    ok = ok || c == g_string;
  }
  if (!ok) {
    fatal("%s: expected an NSString, got a %s", where, o->isa->name.c_str());
  }
  return static_cast<String*>(o);
}

// NSString
Obj* str_with_cstring(SimClass*, SEL, const char* c, unsigned long) {
  return make_string(c ? c : "");
}
Obj* str_with_string(SimClass*, SEL, Obj* other) {
  String* o = as_string(other, "+[NSString stringWithString:]");
  return make_string(o ? o->s : "");
}
Obj* str_init_cstring(Obj* self, SEL, const char* c, unsigned long) {
  static_cast<String*>(self)->s = c ? c : "";
  return self;
}
Obj* str_init_string(Obj* self, SEL, Obj* other) {
  String* o = as_string(other, "-[NSString initWithString:]");
  static_cast<String*>(self)->s = o ? o->s : "";
  return self;
}
const char* str_utf8(Obj* self, SEL) {
  return static_cast<String*>(self)->s.c_str();
}
const char* str_cstring_enc(Obj* self, SEL, unsigned long) {
  return static_cast<String*>(self)->s.c_str();
}
unsigned long str_length(Obj* self, SEL) {
  return static_cast<String*>(self)->s.size();
}
unsigned long str_length_of_bytes(Obj* self, SEL, unsigned long) {
  return static_cast<String*>(self)->s.size();
}
bool str_is_equal(Obj* self, SEL, Obj* other) {
  String* o = as_string(other, "-[NSString isEqualToString:]");
  return o && o->s == static_cast<String*>(self)->s;
}
unsigned long str_hash(Obj* self, SEL) {
  return std::hash<std::string>()(static_cast<String*>(self)->s);
}
Obj* str_description(Obj* self, SEL) {
  return self;
}
unsigned short str_char_at(Obj* self, SEL, unsigned long i) {
  auto& s = static_cast<String*>(self)->s;
  if (i >= s.size()) {
    fatal("-[NSString characterAtIndex:]: index %lu beyond bounds %zu", i, s.size());
  }
  return static_cast<unsigned char>(s[i]);
}

// NSError
Obj* err_with_domain(SimClass*, SEL, Obj* domain, long code, Obj*) {
  auto* e = static_cast<Error*>(alloc_instance(g_error));
  e->domain = domain ? retain(domain) : nullptr;
  e->code = code;
  return autorelease(e);
}
Obj* err_init(Obj* self, SEL, Obj* domain, long code, Obj*) {
  auto* e = static_cast<Error*>(self);
  e->domain = domain ? retain(domain) : nullptr;
  e->code = code;
  return self;
}
Obj* err_domain(Obj* self, SEL) {
  return static_cast<Error*>(self)->domain;
}
long err_code(Obj* self, SEL) {
  return static_cast<Error*>(self)->code;
}
Obj* err_localized(Obj* self, SEL) {
  auto* e = static_cast<Error*>(self);
  if (e->description) {
    return e->description;
  }
  char buf[200];
  snprintf(buf, sizeof buf, "The operation couldn't be completed. (%s error %ld.)",
           e->domain ? string_utf8(e->domain) : "?", e->code);
  e->description = new_string(buf);
  return e->description;
}
Obj* err_nil(Obj*, SEL) {
  return nullptr;
}

// NSArray
Obj* arr_array(SimClass*, SEL) {
  return autorelease(new_array(nullptr, 0));
}
Obj* arr_with_object(SimClass*, SEL, Obj* o) {
  return autorelease(new_array(&o, 1));
}
Obj* arr_with_objects(SimClass*, SEL, Obj* const* objs, unsigned long n) {
  return autorelease(new_array(objs, n));
}
Obj* arr_init_objects(Obj* self, SEL, Obj* const* objs, unsigned long n) {
  auto* a = static_cast<Array*>(self);
  for (unsigned long i = 0; i < n; i++) {
    zombie_check_arg(objs[i], "-[NSArray initWithObjects:count:]");
    a->items.push_back(retain(objs[i]));
  }
  return self;
}
unsigned long arr_count(Obj* self, SEL) {
  return static_cast<Array*>(self)->items.size();
}
Obj* arr_object_at(Obj* self, SEL, unsigned long i) {
  auto& v = static_cast<Array*>(self)->items;
  if (i >= v.size()) {
    fatal("-[NSArray objectAtIndex:]: index %lu beyond bounds [0 .. %zu] (NSRangeException)", i,
          v.empty() ? 0 : v.size() - 1);
  }
  return v[i];
}

// NSURL
Obj* url_file(SimClass*, SEL, Obj* path) {
  String* p = as_string(path, "+[NSURL fileURLWithPath:]");
  auto* u = static_cast<URL*>(alloc_instance(g_url));
  u->path = p ? p->s : "";
  return autorelease(u);
}
Obj* url_init_file(Obj* self, SEL, Obj* path) {
  String* p = as_string(path, "-[NSURL initFileURLWithPath:]");
  static_cast<URL*>(self)->path = p ? p->s : "";
  return self;
}
const char* url_fsrep(Obj* self, SEL) {
  return static_cast<URL*>(self)->path.c_str();
}
Obj* url_path(Obj* self, SEL) {
  return make_string(static_cast<URL*>(self)->path);
}

}  // namespace

Obj* new_string(const std::string& s) {
  auto* o = static_cast<String*>(alloc_instance(g_string));
  o->s = s;
  return o;
}

Obj* make_string(const std::string& s) {
  return autorelease(new_string(s));
}

const char* string_utf8(const Obj* s) {
  return s ? static_cast<const String*>(s)->s.c_str() : nullptr;
}

Obj* new_error(const char* domain, long code, const std::string& description) {
  auto* e = static_cast<Error*>(alloc_instance(g_error));
  e->domain = new_string(domain);
  e->code = code;
  e->description = new_string(description);
  return e;
}

Obj* new_array(Obj* const* objects, size_t count) {
  auto* a = static_cast<Array*>(alloc_instance(g_array));
  for (size_t i = 0; i < count; i++) {
    a->items.push_back(retain(objects[i]));
  }
  return a;
}

std::string url_file_path(Obj* url) {
  if (!url) {
    return "";
  }
  zombie_check_arg(url, "NSURL argument");
  if (url->isa != g_url) {
    fatal("expected an NSURL, got a %s", url->isa->name.c_str());
  }
  return static_cast<URL*>(url)->path;
}

void init_foundation() {
  g_string = define("NSString", "NSObject", make_of<String>, finalize_of<String>);
  cm(g_string, "stringWithCString:encoding:", str_with_cstring);
  cm(g_string, "stringWithString:", str_with_string);
  m(g_string, "initWithCString:encoding:", str_init_cstring);
  m(g_string, "initWithString:", str_init_string);
  m(g_string, "UTF8String", str_utf8);
  m(g_string, "cStringUsingEncoding:", str_cstring_enc);
  m(g_string, "fileSystemRepresentation", str_utf8);
  m(g_string, "length", str_length);
  m(g_string, "lengthOfBytesUsingEncoding:", str_length_of_bytes);
  m(g_string, "maximumLengthOfBytesUsingEncoding:", str_length_of_bytes);
  m(g_string, "isEqualToString:", str_is_equal);
  m(g_string, "isEqual:", str_is_equal);
  m(g_string, "hash", str_hash);
  m(g_string, "description", str_description);
  m(g_string, "characterAtIndex:", str_char_at);

  g_error = define("NSError", "NSObject", make_of<Error>, finalize_of<Error>);
  cm(g_error, "errorWithDomain:code:userInfo:", err_with_domain);
  m(g_error, "initWithDomain:code:userInfo:", err_init);
  m(g_error, "domain", err_domain);
  m(g_error, "code", err_code);
  m(g_error, "localizedDescription", err_localized);
  m(g_error, "localizedFailureReason", err_nil);
  m(g_error, "localizedRecoverySuggestion", err_nil);
  m(g_error, "userInfo", err_nil);

  g_array = define("NSArray", "NSObject", make_of<Array>, finalize_of<Array>);
  cm(g_array, "array", arr_array);
  cm(g_array, "arrayWithObject:", arr_with_object);
  cm(g_array, "arrayWithObjects:count:", arr_with_objects);
  m(g_array, "initWithObjects:count:", arr_init_objects);
  m(g_array, "count", arr_count);
  m(g_array, "objectAtIndex:", arr_object_at);
  m(g_array, "objectAtIndexedSubscript:", arr_object_at);

  g_url = define("NSURL", "NSObject", make_of<URL>, finalize_of<URL>);
  cm(g_url, "fileURLWithPath:", url_file);
  m(g_url, "initFileURLWithPath:", url_init_file);
  m(g_url, "fileSystemRepresentation", url_fsrep);
  m(g_url, "path", url_path);
}

}  // namespace metalsim
