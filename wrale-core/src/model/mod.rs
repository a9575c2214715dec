//! The domain model: devices, samples and hardware vocabulary.

pub mod device;
pub mod hardware;
pub mod sample;

pub use device::{DeviceId, DeviceInfo, GroupId, InvalidId, Location};
pub use hardware::{
    BatteryStatus, ChargeState, Edge, HalErrorKind, Level, PowerSourceKind, PowerSourceStatus,
    PreEol, Pull, SecurityKind, SensorKind, StorageKind, StorageWear, ThrottleFlags,
};
pub use sample::{FanReading, Reading, Sample, SecurityReading, TemperatureReading};
