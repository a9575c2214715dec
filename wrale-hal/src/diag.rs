//! Diagnostics: self-tests on a [`Board`](crate::Board) (placeholder: being written).
