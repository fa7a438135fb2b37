//! Synthetic MovieLens-1M-shaped data with planted sequential structure (placeholder).
