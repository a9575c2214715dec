//! The embedded device runtime against a real hub: fleet commands it executes,
//! refuses, and the fail-safe state it leaves behind on stop.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use wrale_core::DeviceId;
use wrale_core::model::{Actor, Command, CommandRequest, DeviceInfo, PowerSourceKind};
use wrale_core::units::Percent;
use wrale_hal::BatteryConfig;
use wrale_hal::sim::{SimBoard, SimConfig};
use wrale_sync::agent::{ConnectFuture, Connector};
use wrale_sync::embedded::{DeviceConfig, EmbeddedDevice};
use wrale_sync::transport::{Faults, MemoryTransport};
use wrale_sync::{
    CommandReply, CommandStatus, FnConnector, Hub, HubConfig, SqliteStore, TelemetrySink, Transport,
};

use crate::agent::eventually;
use crate::common::info;

struct Discard;

#[async_trait]
impl TelemetrySink for Discard {
    async fn ingest(&self, _: &DeviceId, _: Vec<Vec<u8>>) -> wrale_sync::Result<()> {
        Ok(())
    }
}

/// Links served in-process by `hub`.
fn connector(hub: &Hub, device: &DeviceId) -> Box<dyn Connector> {
    let (hub, device) = (hub.clone(), device.clone());
    Box::new(FnConnector(move || -> ConnectFuture {
        let (a, b) = MemoryTransport::pair(Faults::NONE, 7);
        let (hub, device) = (hub.clone(), device.clone());
        tokio::spawn(async move {
            let _ended = hub.serve(&device, Box::new(b), Arc::new(Discard)).await;
        });
        Box::pin(async move { Ok(Box::new(a) as Box<dyn Transport>) })
    }))
}

async fn send(hub: &Hub, device: &DeviceId, command: Command) -> CommandReply {
    let req = CommandRequest::new(Actor::User("ada".into()), "test", command);
    hub.send_command(device, req, Duration::from_secs(20))
        .await
        .expect("the device answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_commands_run_or_are_refused_and_stop_leaves_outputs_fail_safe() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::new(
        Box::new(SqliteStore::open(dir.path().join("hub.db")).unwrap()),
        HubConfig::default(),
    );
    let sim = SimBoard::new(&SimConfig {
        battery: Some(BatteryConfig::default()),
        ..SimConfig::default()
    })
    .unwrap();
    let device: DeviceInfo = info();
    let id = device.id.clone();
    let config = DeviceConfig {
        interval: Duration::from_millis(20),
        step_clock: true,
        ..DeviceConfig::default()
    };
    let dev = EmbeddedDevice::start_with(
        sim.board(),
        &dir.path().join("device"),
        device,
        connector(&hub, &id),
        config,
    )
    .unwrap();
    eventually("the device is connected", || hub.is_connected(&id)).await;

    // Diagnostics run on the board and come back as the command's result.
    let r = send(&hub, &id, Command::RunDiagnostics).await;
    assert_eq!(r.status, CommandStatus::Done, "{r:?}");
    let report = r.result.expect("a diagnostics report");
    assert_eq!(report["backend"], "sim", "{report}");
    assert!(
        report["checks"].as_array().is_some_and(|c| !c.is_empty()),
        "{report}"
    );

    // Charging goes to the battery the board has.
    let battery = sim.board().battery().unwrap().clone();
    assert!(battery.status().unwrap().charging_enabled);
    let r = send(&hub, &id, Command::EnableCharging { enabled: false }).await;
    assert_eq!(r.status, CommandStatus::Done, "{r:?}");
    // (The sim publishes battery readings on its next step: the device steps it.)
    eventually("the battery stops charging", || {
        !battery.status().unwrap().charging_enabled
    })
    .await;

    // The supply switch too: the device runs from the battery.
    let r = send(
        &hub,
        &id,
        Command::SelectPowerSource {
            source: PowerSourceKind::Battery,
        },
    )
    .await;
    assert_eq!(r.status, CommandStatus::Done, "{r:?}");
    let supply = sim.board().supply().unwrap().clone();
    eventually("the battery is the active source", || {
        supply
            .sources()
            .unwrap()
            .iter()
            .any(|s| s.kind == PowerSourceKind::Battery && s.active)
    })
    .await;

    // Reboots are the host's: refused, naming the command, nothing happens.
    let boot = sim.board().boot().unwrap();
    let r = send(&hub, &id, Command::Reboot).await;
    assert_eq!(r.status, CommandStatus::Refused, "{r:?}");
    assert_eq!(r.code.as_deref(), Some("unsupported"));
    assert!(r.message.unwrap().contains("reboot"), "names the command");
    assert_eq!(sim.board().boot().unwrap(), boot, "no reboot happened");

    // A fan set low by an operator (the board is cool, the engine allows it)...
    let fan = sim.board().fan("fan0").unwrap().clone();
    let r = send(
        &hub,
        &id,
        Command::SetFanDuty {
            fan: "fan0".into(),
            duty: Percent::ZERO,
        },
    )
    .await;
    assert_eq!(r.status, CommandStatus::Done, "{r:?}");
    let status = dev.status();
    assert_eq!(status.commands_done, 4, "{status:?}");
    assert_eq!(status.commands_refused, 1, "{status:?}");

    // ...is left at the fail-safe duty when the program stops the device.
    dev.stop().await.unwrap();
    let safe = sim.board().profile().fan.safe_duty_pct;
    assert!(safe.get() > 0.0);
    assert!(fan.duty().unwrap() >= safe, "{:?} < {safe:?}", fan.duty());
    hub.shutdown();
}
