//! Nothing here: the check is `tests/generated.rs`.
