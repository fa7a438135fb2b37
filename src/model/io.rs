//! The model file (safetensors with config, vocabulary and titles as metadata).
