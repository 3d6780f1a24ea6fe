//! One QuickJS runtime and context per plugin instance, with its heap limit and CPU deadline.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rquickjs::{
    CatchResultExt, CaughtError, Context, Ctx, Function, Module, Object, Runtime, WriteOptions,
};

use super::bundle::ModuleFiles;
use super::host::{install_natives, HostShared};
use super::source::ConfinedModuleLoader;
use crate::plugin::PluginLimits;
use crate::{Error, Result};

const PRELUDE: &str = include_str!("prelude.js");

/// The global under which the prelude's entry points live (non-writable, non-configurable).
const HOST_API_GLOBAL: &str = "__wardenHost";

/// Native stack the engine may use; deep recursion becomes a catchable `RangeError` well before
/// the arbiter thread's own stack could overflow.
const MAX_STACK_BYTES: usize = 512 * 1024;

/// A plugin's engine: its runtime, its one context, and the deadline every entry runs under.
///
/// Fields drop in declaration order: the context before the runtime that owns it.
pub(crate) struct JsEngine {
    context: Context,
    runtime: Runtime,
    deadline: Rc<Cell<Option<Instant>>>,
    interrupted: Rc<Cell<bool>>,
    limits: PluginLimits,
    plugin: String,
}

impl JsEngine {
    /// Creates the runtime with its limits, installs the prelude and the native functions.
    pub(crate) fn new(
        files: ModuleFiles,
        limits: PluginLimits,
        host: &Rc<HostShared>,
    ) -> Result<Self> {
        let plugin = host.plugin.borrow().clone();
        let crashed = |reason: String| Error::Crashed {
            plugin: plugin.clone(),
            reason,
        };
        let runtime = Runtime::new().map_err(|error| crashed(error.to_string()))?;
        runtime.set_memory_limit((limits.memory_limit_mb as usize).saturating_mul(1024 * 1024));
        runtime.set_max_stack_size(MAX_STACK_BYTES);
        runtime.set_loader(
            ConfinedModuleLoader {
                files: files.clone(),
            },
            ConfinedModuleLoader { files },
        );
        let deadline = Rc::new(Cell::new(None::<Instant>));
        let interrupted = Rc::new(Cell::new(false));
        {
            let deadline = deadline.clone();
            let interrupted = interrupted.clone();
            runtime.set_interrupt_handler(Some(Box::new(move || match deadline.get() {
                Some(deadline) if Instant::now() >= deadline => {
                    interrupted.set(true);
                    true
                }
                _ => false,
            })));
        }
        let context = Context::full(&runtime).map_err(|error| crashed(error.to_string()))?;
        let engine = JsEngine {
            context,
            runtime,
            deadline,
            interrupted,
            limits,
            plugin: plugin.clone(),
        };
        let prelude = prelude_bytecode()
            .map_err(|reason| crashed(format!("the prelude does not compile: {reason}")))?;
        engine.enter(|ctx| {
            let natives = Object::new(ctx.clone())?;
            install_natives(ctx, &natives, host)?;
            // Safety: the bytes were written by `Module::write` of this same QuickJS build, and
            // they live for the whole process, as `JS_READ_OBJ_ROM_DATA` requires.
            // The one `unsafe` of the workspace (`unsafe_code` is denied everywhere else).
            #[allow(unsafe_code)]
            let module = unsafe { Module::load(ctx.clone(), prelude) }?;
            let (module, _evaluated) = module.eval()?;
            let bootstrap: Function = module.get("default")?;
            bootstrap.call::<_, ()>((natives, HOST_API_GLOBAL))?;
            Ok(())
        })?;
        Ok(engine)
    }

    /// Declares and evaluates the entry module, then hands its namespace to the prelude, which
    /// returns the JSON description of the plugin object (or `{"error": …}`).
    pub(crate) fn load_module(&self, entry: &str, code: String) -> Result<String> {
        let mut evaluation = None;
        let loaded = self.enter_with(
            |ctx| {
                let module = Module::declare(ctx.clone(), entry, code)?;
                let (module, promise) = module.eval()?;
                evaluation = Some(rquickjs::Persistent::save(ctx, promise));
                let namespace = module.namespace()?;
                let api: Object = ctx.globals().get(HOST_API_GLOBAL)?;
                let keep: Function = api.get("keepNamespace")?;
                keep.call::<_, ()>((namespace,))?;
                Ok(())
            },
            ErrorMeaning::InvalidModule,
        );
        // The evaluation promise must be restored (or dropped) while the runtime lives.
        let evaluation_state = evaluation.and_then(|promise| {
            self.context.with(|ctx| {
                promise
                    .restore(&ctx)
                    .ok()
                    .map(|promise| (promise.state(), promise_error(&ctx, &promise)))
            })
        });
        loaded?;
        match evaluation_state {
            Some((rquickjs::promise::PromiseState::Rejected, reason)) => {
                return Err(Error::invalid_format(format!(
                    "evaluating '{entry}' threw: {reason}"
                )))
            }
            Some((rquickjs::promise::PromiseState::Pending, _)) => {
                return Err(Error::invalid_format(format!(
                    "evaluating '{entry}' did not finish (a top-level await that never settles)"
                )))
            }
            _ => {}
        }
        self.enter_with(
            |ctx| {
                let api: Object = ctx.globals().get(HOST_API_GLOBAL)?;
                let adopt: Function = api.get("adopt")?;
                adopt.call::<_, String>(())
            },
            ErrorMeaning::EngineFault,
        )
    }

    /// Runs `entry` against the prelude's API object, then every job it queued, all within one
    /// deadline; an interrupt, heap exhaustion or any exception escaping the prelude is a fault.
    pub(crate) fn enter_api<R>(
        &self,
        entry: impl for<'js> FnOnce(&Ctx<'js>, &Object<'js>) -> rquickjs::Result<R>,
    ) -> Result<R> {
        self.enter(|ctx| {
            let api: Object = ctx.globals().get(HOST_API_GLOBAL)?;
            entry(ctx, &api)
        })
    }

    fn enter<R>(&self, entry: impl for<'js> FnOnce(&Ctx<'js>) -> rquickjs::Result<R>) -> Result<R> {
        self.enter_with(entry, ErrorMeaning::EngineFault)
    }

    fn enter_with<R>(
        &self,
        entry: impl for<'js> FnOnce(&Ctx<'js>) -> rquickjs::Result<R>,
        meaning: ErrorMeaning,
    ) -> Result<R> {
        self.interrupted.set(false);
        self.deadline.set(Some(
            Instant::now() + Duration::from_millis(self.limits.call_timeout_ms),
        ));
        let result = self.context.with(|ctx| {
            entry(&ctx)
                .catch(&ctx)
                .map_err(|caught| self.classify(caught_message(caught), meaning))
        });
        let drained = result.and_then(|value| self.drain_jobs().map(|()| value));
        self.deadline.set(None);
        drained
    }

    /// Runs queued promise jobs until none is left, under the deadline already set.
    fn drain_jobs(&self) -> Result<()> {
        loop {
            match self.runtime.execute_pending_job() {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(job) => {
                    let message = job.0.with(|ctx| {
                        caught_message(CaughtError::from_error(&ctx, rquickjs::Error::Exception))
                    });
                    return Err(self.classify(message, ErrorMeaning::EngineFault));
                }
            }
        }
    }

    fn classify(&self, message: String, meaning: ErrorMeaning) -> Error {
        if self.interrupted.get() {
            return Error::Timeout {
                plugin: self.plugin.clone(),
                limit_ms: self.limits.call_timeout_ms,
            };
        }
        if message.contains("out of memory") || message.contains("Allocation failed") {
            return Error::HeapExhausted {
                plugin: self.plugin.clone(),
                limit_mb: self.limits.memory_limit_mb,
            };
        }
        match meaning {
            ErrorMeaning::InvalidModule => Error::invalid_format(message),
            ErrorMeaning::EngineFault => Error::Crashed {
                plugin: self.plugin.clone(),
                reason: message,
            },
        }
    }

    /// Bytes the engine's heap holds now.
    pub(crate) fn memory_used(&self) -> u64 {
        self.runtime.memory_usage().memory_used_size.max(0) as u64
    }
}

/// The prelude compiled once per process: parsing it for every engine was most of the cost of
/// creating one.
fn prelude_bytecode() -> std::result::Result<&'static [u8], String> {
    static BYTECODE: OnceLock<std::result::Result<Vec<u8>, String>> = OnceLock::new();
    BYTECODE
        .get_or_init(|| {
            let runtime = Runtime::new().map_err(|error| error.to_string())?;
            let context = Context::full(&runtime).map_err(|error| error.to_string())?;
            context.with(|ctx| {
                Module::declare(ctx.clone(), "warden:prelude", PRELUDE)
                    .and_then(|module| {
                        // Plugins never need the prelude's source text; keep it out of every heap.
                        module.write(WriteOptions {
                            strip_source: true,
                            ..WriteOptions::default()
                        })
                    })
                    .catch(&ctx)
                    .map_err(|caught| caught_message(caught))
            })
        })
        .as_ref()
        .map(Vec::as_slice)
        .map_err(Clone::clone)
}

/// What an exception escaping an entry means.
#[derive(Clone, Copy)]
enum ErrorMeaning {
    /// The plugin's module failed to parse or evaluate: the module is invalid.
    InvalidModule,
    /// Our own prelude failed: the engine is broken.
    EngineFault,
}

fn caught_message(caught: CaughtError<'_>) -> String {
    match caught {
        CaughtError::Exception(exception) => {
            let name: Option<String> = exception.as_object().get("name").ok();
            let message = exception.message().unwrap_or_default();
            match name {
                Some(name) if !name.is_empty() => format!("{name}: {message}"),
                _ => message,
            }
        }
        CaughtError::Value(value) => format!("{value:?}"),
        CaughtError::Error(error) => error.to_string(),
    }
}

fn promise_error<'js>(ctx: &Ctx<'js>, promise: &rquickjs::Promise<'js>) -> String {
    match promise.result::<rquickjs::Value>() {
        Some(Err(error)) => caught_message(CaughtError::from_error(ctx, error)),
        _ => String::new(),
    }
}
