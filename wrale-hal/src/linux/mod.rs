//! The `linux` backend (placeholder: being written).

use crate::error::{HalError, Result};
use crate::{Board, LinuxConfig};

pub(crate) fn open(_c: &LinuxConfig) -> Result<Board> {
    Err(HalError::unsupported("linux backend under construction"))
}
