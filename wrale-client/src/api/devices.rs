//! Devices, groups, topology and device commands.

use reqwest::Method;

use super::access::ListOf;
use crate::client::Client;
use crate::error::Result;
use crate::models::{
    Command, CommandBody, CommandOutcome, Device, DeviceFilter, DevicePatch, Group, GroupPatch,
    Neighbours, NewGroup, Page, Topology,
};

/// Upper bound on pages followed by the `*_all` helpers (500 items a page at most
/// on the server, so 2,000 pages is a million devices): a server that keeps
/// returning a cursor cannot make a client loop forever.
pub(crate) const MAX_PAGES: usize = 2_000;

impl Client {
    /// `GET /devices`: one page of devices matching `filter`.
    pub async fn list_devices(&self, filter: &DeviceFilter) -> Result<Page<Device>> {
        self.get(&["devices"], &filter.to_query()).await
    }

    /// Every device matching `filter`, following `next_cursor` page by page
    /// (`filter.cursor` is the starting point, `filter.limit` the page size).
    pub async fn list_all_devices(&self, filter: &DeviceFilter) -> Result<Vec<Device>> {
        let mut filter = filter.clone();
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let page = self.list_devices(&filter).await?;
            out.extend(page.items);
            match page.next_cursor {
                Some(c) if filter.cursor.as_deref() != Some(c.as_str()) => filter.cursor = Some(c),
                _ => break,
            }
        }
        Ok(out)
    }

    /// `GET /devices/{id}`.
    pub async fn get_device(&self, id: &str) -> Result<Device> {
        self.get(&["devices", id], &[]).await
    }

    /// `PATCH /devices/{id}`: labels, location, group (operator).
    pub async fn update_device(&self, id: &str, patch: &DevicePatch) -> Result<Device> {
        self.call(Method::PATCH, &["devices", id], &[], Some(patch))
            .await
    }

    /// `DELETE /devices/{id}` (admin).
    pub async fn delete_device(&self, id: &str) -> Result<()> {
        self.call_empty::<()>(Method::DELETE, &["devices", id], None)
            .await
    }

    /// `POST /devices/{id}/revoke`: revokes the credential and closes the live
    /// session (admin); returns the revoked record.
    pub async fn revoke_device(&self, id: &str) -> Result<Device> {
        self.call::<(), _>(Method::POST, &["devices", id, "revoke"], &[], None)
            .await
    }

    /// `GET /devices/{id}/neighbours`: devices on the same shelf and rack.
    pub async fn neighbours(&self, id: &str) -> Result<Neighbours> {
        self.get(&["devices", id, "neighbours"], &[]).await
    }

    /// `POST /devices/{id}/commands`: sends a command to the connected device and
    /// waits for its answer. A refusal by the device's safety engine is an `Ok`
    /// with status `refused`; an offline device is `Err` with code `device_offline`,
    /// no answer in time `timeout`.
    pub async fn send_command(
        &self,
        id: &str,
        command: Command,
        reason: impl Into<String>,
    ) -> Result<CommandOutcome> {
        let body = CommandBody {
            command,
            reason: reason.into(),
        };
        self.call(Method::POST, &["devices", id, "commands"], &[], Some(&body))
            .await
    }

    /// `GET /groups`.
    pub async fn list_groups(&self) -> Result<Vec<Group>> {
        let l: ListOf<Group> = self.get(&["groups"], &[]).await?;
        Ok(l.into_vec())
    }

    /// `POST /groups` (operator).
    pub async fn create_group(&self, group: &NewGroup) -> Result<Group> {
        self.call(Method::POST, &["groups"], &[], Some(group)).await
    }

    /// `GET /groups/{id}`.
    pub async fn get_group(&self, id: &str) -> Result<Group> {
        self.get(&["groups", id], &[]).await
    }

    /// `PATCH /groups/{id}` (operator); a cycle in the tree is `conflict`.
    pub async fn update_group(&self, id: &str, patch: &GroupPatch) -> Result<Group> {
        self.call(Method::PATCH, &["groups", id], &[], Some(patch))
            .await
    }

    /// `DELETE /groups/{id}` (operator).
    pub async fn delete_group(&self, id: &str) -> Result<()> {
        self.call_empty::<()>(Method::DELETE, &["groups", id], None)
            .await
    }

    /// `GET /topology`: sites -> racks -> shelves -> device ids.
    pub async fn topology(&self) -> Result<Topology> {
        self.get(&["topology"], &[]).await
    }
}
