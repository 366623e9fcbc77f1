"""mlx-fork: pinned MLX source + a patch series -> validated, self-identifying wheels."""

__version__ = "0.1.0"
