//! Sensors and fans supplied by the host program as JS functions
//! (`Board.fromCallbacks`), callable from any thread without deadlock.
//!
//! A board is read on two kinds of thread: the JS thread (`board.sample()`,
//! `board.setFan`, ...) and the embedded runtime's threads (a running `Device`
//! samples on napi's tokio runtime). A [`HostFn`] calls its JS function
//! directly when it is on the JS thread that created it. On any other thread it
//! queues the call to the JS thread through a `ThreadsafeFunction` and waits for
//! the answer at most `timeout`; no answer in time is an error (a sensor fault,
//! or a fan error), never a wait without end. So a JS thread that is itself
//! blocked in a synchronous call into the same board (or just busy) costs the
//! agent one faulted reading, not a deadlock. A queued call the agent gave up on
//! still runs on the JS thread later; its answer is dropped.

use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::sync::{Mutex, PoisonError};
use std::thread::ThreadId;
use std::time::Duration;

use napi::bindgen_prelude::{FromNapiValue, FunctionRef, JsValuesTupleIntoVec};
use napi::threadsafe_function::{
    ThreadsafeFunction, ThreadsafeFunctionCallMode, UnknownReturnValue,
};
use napi::{Env, Status};
use wrale_core::model::SensorKind;
use wrale_core::units::{Celsius, Percent, Rpm};
use wrale_hal::HalError;
use wrale_hal::thermal::{Fan, ThermalSensor};

/// A JS function callable from the JS thread and from other threads.
pub(crate) struct HostFn<A: JsValuesTupleIntoVec + 'static, R: FromNapiValue + 'static> {
    js_thread: ThreadId,
    /// The JS thread's `napi_env`, turned back into an [`Env`] only on `js_thread`.
    env: usize,
    /// `None` once dropped off the JS thread (see `Drop`).
    direct: Option<FunctionRef<A, R>>,
    queued: ThreadsafeFunction<A, R, A, Status, false, true>,
    timeout: Duration,
}

impl<A, R> HostFn<A, R>
where
    A: JsValuesTupleIntoVec + Send + 'static,
    R: FromNapiValue + Send + 'static,
{
    /// Wraps `f` (on the JS thread). The threadsafe function is weak: it does
    /// not keep Node's event loop alive.
    pub(crate) fn new(env: &Env, f: FunctionRef<A, R>, timeout: Duration) -> napi::Result<Self> {
        let queued = f
            .borrow_back(env)?
            .build_threadsafe_function::<A>()
            .callee_handled::<false>()
            .weak::<true>()
            .build()?;
        Ok(HostFn {
            js_thread: std::thread::current().id(),
            env: env.raw() as usize,
            direct: Some(f),
            queued,
            timeout,
        })
    }

    /// Calls the function with `arg`; the error is a one-line reason.
    pub(crate) fn call(&self, arg: A) -> Result<R, String> {
        if std::thread::current().id() == self.js_thread {
            let direct = self.direct.as_ref().ok_or("the function was released")?;
            let env = Env::from_raw(self.env as napi::sys::napi_env);
            return direct
                .borrow_back(&env)
                .and_then(|f| f.call(arg))
                .map_err(|e| first_line(&e.reason));
        }
        let (tx, rx) = sync_channel(1);
        let status = self.queued.call_with_return_value(
            arg,
            ThreadsafeFunctionCallMode::NonBlocking,
            move |r: napi::Result<R>, _env| {
                // The caller may have given up already; then nobody listens.
                let _gone = tx.send(r.map_err(|e| first_line(&e.reason)));
                Ok(())
            },
        );
        if status != Status::Ok {
            return Err(format!("the JS thread takes no calls ({status})"));
        }
        match rx.recv_timeout(self.timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "no answer from the JS thread within {} ms",
                self.timeout.as_millis()
            )),
            Err(RecvTimeoutError::Disconnected) => Err("the JS thread dropped the call".into()),
        }
    }
}

impl<A: JsValuesTupleIntoVec + 'static, R: FromNapiValue + 'static> Drop for HostFn<A, R> {
    fn drop(&mut self) {
        // A napi reference may only be deleted on its JS thread. When the last
        // owner of the board is a runtime thread (a device outliving its JS
        // board object), the reference is left to the env's teardown instead.
        if std::thread::current().id() != self.js_thread {
            std::mem::forget(self.direct.take());
        }
    }
}

fn first_line(reason: &str) -> String {
    reason.lines().next().unwrap_or("").to_owned()
}

/// A temperature sensor whose reading is a JS function returning °C.
pub(crate) struct HostThermal {
    pub(crate) id: String,
    pub(crate) read: HostFn<(), f64>,
}

impl std::fmt::Debug for HostThermal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostThermal").field("id", &self.id).finish()
    }
}

impl ThermalSensor for HostThermal {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> SensorKind {
        SensorKind::for_sensor_id(&self.id)
    }

    fn read(&self) -> wrale_hal::Result<Celsius> {
        let fault = |detail: String| HalError::sensor_fault(&self.id, detail);
        let v = self
            .read
            .call(())
            .map_err(|e| fault(format!("host callback: {e}")))?;
        if v.is_finite() {
            Ok(Celsius(v))
        } else {
            Err(fault(format!("host callback returned {v}")))
        }
    }
}

/// A fan driven by a JS function taking the duty in percent.
pub(crate) struct HostFan {
    pub(crate) id: String,
    pub(crate) set: HostFn<f64, UnknownReturnValue>,
    pub(crate) duty: Mutex<Percent>,
}

impl std::fmt::Debug for HostFan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostFan").field("id", &self.id).finish()
    }
}

impl Fan for HostFan {
    fn id(&self) -> &str {
        &self.id
    }

    fn set_duty(&self, duty: Percent) -> wrale_hal::Result<()> {
        self.set.call(duty.get()).map_err(|detail| HalError::Bus {
            bus: format!("host fan {}", self.id),
            detail,
        })?;
        *self.duty.lock().unwrap_or_else(PoisonError::into_inner) = duty;
        Ok(())
    }

    fn duty(&self) -> wrale_hal::Result<Percent> {
        Ok(*self.duty.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn has_tach(&self) -> bool {
        false
    }

    fn rpm(&self) -> wrale_hal::Result<Rpm> {
        Err(HalError::unsupported(format!(
            "fan {} has no tachometer",
            self.id
        )))
    }
}
