//! I2C sensor drivers, generic over `embedded-hal` 1.0 I2C (placeholder: being written).
