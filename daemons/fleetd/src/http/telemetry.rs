//! Telemetry routes: `GET /api/v1/devices/{id}/telemetry` and
//! `GET /api/v1/groups/{id}/telemetry` (docs/fleet-api.md, docs/telemetry.md).
//!
//! Devices may also `POST /api/v1/devices/{id}/telemetry` one `encode_batch`
//! record (`application/octet-stream`) with their own credential, when they cannot
//! keep the sync WebSocket open.
//!
//! Query: `metric` (required, e.g. `cpu_temp_c`), `from` and `to` (RFC 3339 or
//! milliseconds since the epoch; default the last hour), `resolution` (`raw`, `1m`,
//! `1h`, `auto`; default `auto`), and for groups `agg` (`avg`, `min`, `max`; default
//! `avg`). A bad or unknown parameter is 400 `invalid_query` naming it.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};
use wrale_core::fleet::access::Action;
use wrale_core::fleet::telemetry::{
    Bucket, GroupAgg, GroupPoint, Resolution, ResolutionRequest, TelemetryError, TimeRange,
    aggregate_group, auto_resolution, parse_query_time,
};
use wrale_core::{DeviceId, GroupId, Timestamp};

use super::devices::{device_id, group_tree};
use super::{Access, ApiRoutes, query_pairs};
use crate::error::{ApiError, BodyLimit};
use crate::state::{AppState, now};
use crate::telemetry::{StoreFailure, Telemetry, TelemetryConfig, known_metrics};

/// This module's routes; each carries its access rule and is checked against the
/// OpenAPI document (see [`ApiRoutes`]).
pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .route(
            Method::GET,
            "/api/v1/devices/{id}/telemetry",
            Access::Action(Action::ReadFleet),
            device_telemetry,
        )
        .route(
            Method::POST,
            "/api/v1/devices/{id}/telemetry",
            Access::Action(Action::WriteTelemetry),
            post_telemetry,
        )
        .route(
            Method::GET,
            "/api/v1/groups/{id}/telemetry",
            Access::Action(Action::ReadFleet),
            group_telemetry,
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(device_telemetry, post_telemetry, group_telemetry),
    components(schemas(
        DeviceTelemetry,
        GroupTelemetry,
        RawPoint,
        BucketPoint,
        GroupValue,
        Ingested
    ))
)]
struct TelemetryDoc;

/// This module's part of the OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    TelemetryDoc::openapi()
}

/// A raw point.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RawPoint {
    /// When it was sampled.
    #[schema(value_type = String, format = DateTime)]
    pub t: Timestamp,
    /// The value, in the metric's unit.
    pub value: f64,
}

/// A rollup bucket (`1m` or `1h`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BucketPoint {
    /// Start of the bucket (UTC-aligned).
    #[schema(value_type = String, format = DateTime)]
    pub t: Timestamp,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean value.
    pub avg: f64,
    /// Number of raw points in the bucket.
    pub count: u64,
}

impl From<&Bucket> for BucketPoint {
    fn from(b: &Bucket) -> Self {
        BucketPoint {
            t: b.start,
            min: b.min,
            max: b.max,
            avg: b.avg(),
            count: b.count,
        }
    }
}

/// Points of a device answer: raw points or buckets, by resolution.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Points {
    /// `resolution = raw`.
    Raw(Vec<RawPoint>),
    /// `resolution = 1m | 1h`.
    Buckets(Vec<BucketPoint>),
}

/// Answer of `GET /api/v1/devices/{id}/telemetry`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceTelemetry {
    /// The device.
    pub device: String,
    /// The metric.
    pub metric: String,
    /// The resolution answered (`auto` resolved to a tier).
    #[schema(value_type = String, example = "1m")]
    pub resolution: Resolution,
    /// Start of the range.
    #[schema(value_type = String, format = DateTime)]
    pub from: Timestamp,
    /// End of the range (excluded).
    #[schema(value_type = String, format = DateTime)]
    pub to: Timestamp,
    /// Points sorted by time.
    pub points: Points,
}

/// One bucket of a group answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupValue {
    /// Start of the bucket.
    #[schema(value_type = String, format = DateTime)]
    pub t: Timestamp,
    /// The aggregate across the devices with data in the bucket.
    pub value: f64,
    /// How many devices had data in the bucket.
    pub devices: u32,
}

impl From<GroupPoint> for GroupValue {
    fn from(p: GroupPoint) -> Self {
        GroupValue {
            t: p.t,
            value: p.value,
            devices: p.devices,
        }
    }
}

/// Answer of `GET /api/v1/groups/{id}/telemetry`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupTelemetry {
    /// The group.
    pub group: String,
    /// The metric.
    pub metric: String,
    /// The resolution answered (`1m` or `1h`).
    #[schema(value_type = String, example = "1m")]
    pub resolution: Resolution,
    /// The aggregate (`avg`, `min`, `max`).
    #[schema(value_type = String, example = "avg")]
    pub agg: GroupAgg,
    /// Start of the range.
    #[schema(value_type = String, format = DateTime)]
    pub from: Timestamp,
    /// End of the range (excluded).
    #[schema(value_type = String, format = DateTime)]
    pub to: Timestamp,
    /// The devices of the group and its subgroups.
    pub devices: Vec<String>,
    /// One value per bucket, sorted by time.
    pub points: Vec<GroupValue>,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
struct TelemetryQuery {
    metric: &'static str,
    range: TimeRange,
    resolution: ResolutionRequest,
    agg: GroupAgg,
}

fn invalid(e: TelemetryError) -> ApiError {
    match e {
        TelemetryError::InvalidQuery { param, message } => {
            ApiError::invalid_query(param, format!("{param}: {message}"))
        }
        other => ApiError::invalid_query("query", other.to_string()),
    }
}

fn parse_query(
    query: Option<&str>,
    group: bool,
    now: Timestamp,
) -> Result<TelemetryQuery, ApiError> {
    let (mut metric, mut from, mut to, mut res, mut agg) = (None, None, None, None, None);
    let mut seen = BTreeSet::new();
    for (k, v) in query_pairs(query) {
        let param: &'static str = match k.as_str() {
            "metric" => "metric",
            "from" => "from",
            "to" => "to",
            "resolution" => "resolution",
            "agg" if group => "agg",
            other => {
                let expected = if group {
                    "metric, from, to, resolution, agg"
                } else {
                    "metric, from, to, resolution"
                };
                return Err(ApiError::invalid_query(
                    other,
                    format!("unknown parameter `{other}` (expected {expected})"),
                ));
            }
        };
        if !seen.insert(param) {
            return Err(ApiError::invalid_query(
                param,
                format!("{param}: given more than once"),
            ));
        }
        match param {
            "metric" => {
                let m = known_metrics().find(|m| *m == v).ok_or_else(|| {
                    ApiError::invalid_query(
                        "metric",
                        format!(
                            "metric: unknown metric {v:?} (known: {})",
                            known_metrics().collect::<Vec<_>>().join(", ")
                        ),
                    )
                })?;
                metric = Some(m);
            }
            "from" => from = Some(parse_query_time("from", &v).map_err(invalid)?),
            "to" => to = Some(parse_query_time("to", &v).map_err(invalid)?),
            "resolution" => res = Some(v.parse::<ResolutionRequest>().map_err(invalid)?),
            _ => agg = Some(v.parse::<GroupAgg>().map_err(invalid)?),
        }
    }
    let metric = metric.ok_or_else(|| {
        ApiError::invalid_query(
            "metric",
            format!(
                "metric: required (one of {})",
                known_metrics().collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    let to = to.unwrap_or(now);
    let from = from.unwrap_or(to - Duration::from_secs(3600));
    let range = TimeRange::new(from, to).map_err(invalid)?;
    let resolution = res.unwrap_or_default();
    if group && resolution == ResolutionRequest::Fixed(Resolution::Raw) {
        return Err(ApiError::invalid_query(
            "resolution",
            "resolution: raw is not available for group queries (devices' samples do not share \
             timestamps); use 1m, 1h or auto",
        ));
    }
    Ok(TelemetryQuery {
        metric,
        range,
        resolution,
        agg: agg.unwrap_or_default(),
    })
}

fn store_error(e: StoreFailure) -> ApiError {
    ApiError::internal(e.to_string())
}

fn too_many(res: Resolution, points: u64, max: u64) -> ApiError {
    ApiError::invalid_query(
        "resolution",
        format!(
            "resolution: the range holds {points} points at {res}, more than the limit of {max} \
             (telemetry.max_points); narrow from/to or use a coarser resolution or auto"
        ),
    )
}

/// Checks that a rollup answer stays within `max` buckets.
fn check_buckets(q: &TelemetryQuery, res: Resolution, max: u64) -> Result<(), ApiError> {
    if let Some(w) = res.width() {
        let n = q.range.bucket_count(w);
        if n > max {
            return Err(too_many(res, n, max));
        }
    }
    Ok(())
}

/// Answers a device query (blocking).
fn device_points(
    tel: &Telemetry,
    cfg: &TelemetryConfig,
    device: &DeviceId,
    q: &TelemetryQuery,
    now: Timestamp,
) -> Result<(Resolution, Points), ApiError> {
    let store = tel.store();
    let retention = cfg.retention();
    let res = match q.resolution {
        ResolutionRequest::Fixed(r) => r,
        ResolutionRequest::Auto => {
            let raw = if retention.covers(Resolution::Raw, q.range.from, now) {
                Some(
                    store
                        .raw_count(device, q.metric, &q.range)
                        .map_err(store_error)?,
                )
            } else {
                None
            };
            auto_resolution(&q.range, now, &retention, cfg.auto_max_points, raw)
        }
    };
    if res == Resolution::Raw {
        let pts = store
            .raw(device, q.metric, &q.range, cfg.max_points + 1)
            .map_err(store_error)?;
        if pts.len() as u64 > cfg.max_points {
            let n = store
                .raw_count(device, q.metric, &q.range)
                .map_err(store_error)?;
            return Err(too_many(res, n, cfg.max_points));
        }
        let pts = pts
            .into_iter()
            .map(|(t, value)| RawPoint { t, value })
            .collect();
        return Ok((res, Points::Raw(pts)));
    }
    check_buckets(q, res, cfg.max_points)?;
    let b = store
        .buckets(device, q.metric, res, &q.range)
        .map_err(store_error)?;
    Ok((
        res,
        Points::Buckets(b.iter().map(BucketPoint::from).collect()),
    ))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("telemetry task: {e}")))?
}

/// `GET /api/v1/devices/{id}/telemetry`: one metric of one device over a range.
#[utoipa::path(get, path = "/api/v1/devices/{id}/telemetry", tag = "telemetry", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "device id"),
        ("metric" = String, Query, description = "cpu_temp_c, ambient_temp_c, supply_v, current_a, power_w, fan_duty_pct, fan_rpm, cpu_load_pct, cpu_freq_mhz, throttle_bits"),
        ("from" = Option<String>, Query, description = "RFC 3339 or epoch ms; default `to` minus 1 h"),
        ("to" = Option<String>, Query, description = "RFC 3339 or epoch ms (excluded); default now"),
        ("resolution" = Option<String>, Query, description = "raw, 1m, 1h or auto (default): auto picks the finest tier that covers the range with at most telemetry.auto_max_points points"),
    ),
    responses(
        (status = 200, description = "points `[{t, value}]` (raw) or `[{t, min, max, avg, count}]` (1m, 1h)", body = DeviceTelemetry),
        (status = 400, description = "`invalid_query` naming the parameter"),
        (status = 404, description = "no such device"),
    ))]
pub async fn device_telemetry(
    State(s): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<DeviceTelemetry>, ApiError> {
    let device = device_id(&id)?;
    let now = now();
    let q = parse_query(uri.query(), false, now)?;
    let d = device.clone();
    if s.store(move |st| st.get_device(&d)).await?.is_none() {
        return Err(ApiError::not_found(format!("no device {device}")));
    }
    let (tel, cfg) = (s.telemetry.clone(), s.config().telemetry.clone());
    let (dev, query) = (device.clone(), q.clone());
    let (resolution, points) =
        blocking(move || device_points(&tel, &cfg, &dev, &query, now)).await?;
    Ok(Json(DeviceTelemetry {
        device: device.to_string(),
        metric: q.metric.to_owned(),
        resolution,
        from: q.range.from,
        to: q.range.to,
        points,
    }))
}

/// Answer of `POST /api/v1/devices/{id}/telemetry`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Ingested {
    /// Points stored.
    pub inserted: u64,
    /// Points already stored under the same `(device, metric, t)` (ignored).
    pub duplicates: u64,
    /// Whether the record's exact bytes were ingested before (skipped whole).
    pub replayed: bool,
    /// Points dropped for a timestamp too far in the future.
    pub dropped: u64,
}

/// `POST /api/v1/devices/{id}/telemetry`: one `wrale_sync::telemetry::encode_batch`
/// record from the device itself. Idempotent: sending it again stores nothing new.
#[utoipa::path(post, path = "/api/v1/devices/{id}/telemetry", tag = "telemetry", security(("bearer" = [])),
    params(("id" = String, Path, description = "device id (the caller's own)")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "one encode_batch record naming this device"),
    responses(
        (status = 200, description = "stored", body = Ingested),
        (status = 400, description = "`invalid_body`: the record does not decode or names another device"),
        (status = 403, description = "not this device's credential"),
        (status = 413, description = "`body_too_large`"),
    ))]
pub async fn post_telemetry(
    State(s): State<AppState>,
    Path(id): Path<String>,
    limit: Option<Extension<BodyLimit>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Ingested>, ApiError> {
    let device = device_id(&id)?;
    let body = body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::body_too_large(limit.map_or(usize::MAX, |l| l.0.0))
        } else {
            ApiError::invalid_body(None, rej.body_text())
        }
    })?;
    let report = crate::telemetry::ingest(&s, &device, vec![body.to_vec()])
        .await
        .map_err(store_error)?;
    if let Some(r) = report.rejected.first() {
        return Err(ApiError::invalid_body(
            None,
            format!("telemetry record refused: {}", r.reason),
        ));
    }
    Ok(Json(Ingested {
        inserted: report.stored.inserted,
        duplicates: report.stored.duplicates,
        replayed: report.stored.replayed_batches > 0,
        dropped: report.dropped_points,
    }))
}

/// `GET /api/v1/groups/{id}/telemetry`: one metric aggregated across the devices
/// of a group and its subgroups, per bucket.
#[utoipa::path(get, path = "/api/v1/groups/{id}/telemetry", tag = "telemetry", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "group id"),
        ("metric" = String, Query, description = "a metric name, as for devices"),
        ("from" = Option<String>, Query, description = "RFC 3339 or epoch ms; default `to` minus 1 h"),
        ("to" = Option<String>, Query, description = "RFC 3339 or epoch ms (excluded); default now"),
        ("resolution" = Option<String>, Query, description = "1m, 1h or auto (default); raw is refused"),
        ("agg" = Option<String>, Query, description = "avg (default: mean of the devices' bucket averages), min or max"),
    ),
    responses(
        (status = 200, description = "`points: [{t, value, devices}]`", body = GroupTelemetry),
        (status = 400, description = "`invalid_query` naming the parameter"),
        (status = 404, description = "no such group"),
    ))]
pub async fn group_telemetry(
    State(s): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<GroupTelemetry>, ApiError> {
    let group = GroupId::new(&id).map_err(|_| ApiError::not_found(format!("no group {id:?}")))?;
    let now = now();
    let q = parse_query(uri.query(), true, now)?;
    let tree = group_tree(&s).await?;
    if !tree.contains(&group) {
        return Err(ApiError::not_found(format!("no group {group}")));
    }
    let groups = tree.subtree(&group);
    let devices: Vec<DeviceId> = s
        .store(|st| st.list_devices())
        .await?
        .into_iter()
        .filter(|d| d.group.as_ref().is_some_and(|g| groups.contains(g)))
        .map(|d| d.id)
        .collect();
    let cfg = s.config().telemetry.clone();
    let res = match q.resolution {
        ResolutionRequest::Fixed(r) => r,
        ResolutionRequest::Auto => {
            auto_resolution(&q.range, now, &cfg.retention(), cfg.auto_max_points, None)
        }
    };
    check_buckets(&q, res, cfg.max_points)?;
    let tel = s.telemetry.clone();
    let (devs, query) = (devices.clone(), q.clone());
    let points = blocking(move || {
        let mut series = Vec::with_capacity(devs.len());
        for d in &devs {
            series.push(
                tel.store()
                    .buckets(d, query.metric, res, &query.range)
                    .map_err(store_error)?,
            );
        }
        Ok(aggregate_group(series.iter().map(Vec::as_slice), query.agg))
    })
    .await?;
    Ok(Json(GroupTelemetry {
        group: group.to_string(),
        metric: q.metric.to_owned(),
        resolution: res,
        agg: q.agg,
        from: q.range.from,
        to: q.range.to,
        devices: devices.iter().map(ToString::to_string).collect(),
        points: points.into_iter().map(GroupValue::from).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(1_795_000_000_000);

    fn param(e: &ApiError) -> String {
        e.detail("param")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned()
    }

    #[test]
    fn queries_parse_with_defaults() {
        let q = parse_query(Some("metric=cpu_temp_c"), false, NOW).unwrap();
        assert_eq!(q.metric, "cpu_temp_c");
        assert_eq!(q.range.to, NOW);
        assert_eq!(q.range.from, NOW - Duration::from_secs(3600));
        assert_eq!(q.resolution, ResolutionRequest::Auto);
        let q = parse_query(
            Some("metric=fan_rpm&from=2026-11-18T10:00:00Z&to=1795000000000&resolution=1h&agg=max"),
            true,
            NOW,
        )
        .unwrap();
        assert_eq!(q.resolution, ResolutionRequest::Fixed(Resolution::Hour));
        assert_eq!(q.agg, GroupAgg::Max);
    }

    #[test]
    fn bad_queries_name_the_parameter() {
        let cases: [(&str, bool, &str); 10] = [
            ("", false, "metric"),
            ("metric=bogus", false, "metric"),
            ("metric=cpu_temp_c&from=yesterday", false, "from"),
            ("metric=cpu_temp_c&to=x", false, "to"),
            ("metric=cpu_temp_c&resolution=5m", false, "resolution"),
            ("metric=cpu_temp_c&agg=avg", false, "agg"),
            ("metric=cpu_temp_c&agg=median", true, "agg"),
            ("metric=cpu_temp_c&resolution=raw", true, "resolution"),
            ("metric=cpu_temp_c&from=2000&to=1000", false, "from"),
            ("metric=cpu_temp_c&metric=fan_rpm", false, "metric"),
        ];
        for (q, group, p) in cases {
            let e = parse_query(Some(q), group, NOW).unwrap_err();
            assert_eq!(e.code(), "invalid_query", "{q}");
            assert_eq!(param(&e), p, "{q}: {e}");
        }
    }
}
