//! The `rpi` backend (placeholder: being written).

use crate::error::{HalError, Result};
use crate::{Board, RpiConfig};

pub(crate) fn open(_c: &RpiConfig) -> Result<Board> {
    Err(HalError::unsupported("rpi backend under construction"))
}
