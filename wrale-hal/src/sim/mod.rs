//! The `sim` backend (placeholder: being written).

use crate::error::{HalError, Result};
use crate::{Board, SimConfig};

pub(crate) fn open(_c: &SimConfig) -> Result<Board> {
    Err(HalError::unsupported("sim backend under construction"))
}
