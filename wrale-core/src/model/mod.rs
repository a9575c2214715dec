//! The domain model: devices, samples, commands, alerts and hardware vocabulary.

pub mod alert;
pub mod command;
pub mod device;
pub mod hardware;
pub mod sample;

pub use alert::{Alert, AlertCode, Severity};
pub use command::{
    Actor, Command, CommandKind, CommandRequest, CommandTarget, FanProfileName, InvalidActor,
    UnknownCommand,
};
pub use device::{DeviceId, DeviceInfo, GroupId, InvalidId, Location};
pub use hardware::{
    BatteryStatus, ChargeState, Edge, HalErrorKind, Level, PowerSourceKind, PowerSourceStatus,
    PreEol, Pull, SecurityKind, SensorKind, StorageKind, StorageWear, ThrottleFlags,
};
pub use sample::{FanReading, Reading, Sample, SecurityReading, TemperatureReading};
