//! One VM instance of one filter module, and the host functions it imports.
//!
//! nginx runs one instance per module per worker process; each filter in a chain
//! gets its own root context in that instance (FACTS §6, ngx_wasm_module
//! `docs/PROXY_WASM.md` "Filter Chains"). Host functions follow
//! `src/common/proxy_wasm/ngx_proxy_wasm_host.c`: they check the current step and
//! trap where ngx_wasm_module traps (dispatch outside request/tick/dispatch-response
//! hooks, a second tick period, shared data without a zone, setting request
//! headers after the response was produced, …).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use wasmtime::{
    Caller, Engine, Extern, ExternType, Instance, Linker, Memory, Module, Store, TypedFunc, Val,
    ValType,
};

use crate::abi::{self, status, LogLevel};
use crate::error::HostError;
use crate::shared::{KvSet, Shared};
use crate::stream::{header_value, remove_header, replace_header, LocalResponse, Step, StreamData};

/// A compiled filter: the `.wasm` file Kong loads from `wasm_filters_path`.
#[derive(Clone)]
pub struct FilterModule {
    pub name: String,
    pub(crate) module: Module,
}

impl std::fmt::Debug for FilterModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterModule")
            .field("name", &self.name)
            .finish()
    }
}

const WASI: &str = "wasi_snapshot_preview1";

/// WASI functions a Rust `wasm32-wasip1` filter imports; anything else from WASI
/// is refused at load time with a clear error.
const WASI_SUPPORTED: &[&str] = &[
    "fd_write",
    "environ_get",
    "environ_sizes_get",
    "proc_exit",
    "random_get",
    "clock_time_get",
    "clock_res_get",
    "args_get",
    "args_sizes_get",
    "sched_yield",
    "fd_close",
    "fd_seek",
    "fd_read",
    "fd_fdstat_get",
    "fd_prestat_get",
    "fd_prestat_dir_name",
];

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;

impl FilterModule {
    /// Compiles `bytes` and checks the module is a proxy-wasm 0.2.x filter whose
    /// imports this host provides.
    pub fn compile(engine: &Engine, name: &str, bytes: &[u8]) -> Result<Self, HostError> {
        let module = Module::new(engine, bytes).map_err(|e| HostError::Compile {
            filter: name.to_string(),
            reason: format!("{e:#}"),
        })?;
        let abi = module.exports().any(|e| {
            matches!(
                e.name(),
                "proxy_abi_version_0_2_1" | "proxy_abi_version_0_2_0"
            )
        });
        if !abi {
            return Err(HostError::NotAFilter {
                filter: name.to_string(),
                reason: "exports no proxy_abi_version_0_2_1 / _0_2_0".into(),
            });
        }
        for import in module.imports() {
            let ok = match (import.module(), import.name()) {
                ("env", n) if n.starts_with("proxy_") => matches!(import.ty(), ExternType::Func(_)),
                (WASI, n) => WASI_SUPPORTED.contains(&n),
                _ => false,
            };
            if !ok {
                return Err(HostError::UnsupportedImport {
                    filter: name.to_string(),
                    module: import.module().to_string(),
                    name: import.name().to_string(),
                });
            }
        }
        Ok(FilterModule {
            name: name.to_string(),
            module,
        })
    }
}

/// Something a host call asked for that the worker carries out after the hook returns.
#[derive(Debug)]
pub enum Effect {
    /// `proxy_continue_stream`: resume the request this instance is executing for.
    /// ngx_wasm_module ignores `proxy_set_effective_context` (it is a no-op in
    /// ngx_proxy_wasm_host.c), so the stream is always the current one.
    ContinueStream,
    Dispatch(DispatchRequest),
}

/// An outgoing `proxy_http_call`.
#[derive(Debug, Clone)]
pub struct DispatchRequest {
    pub token: u32,
    /// The context that receives the response (the HTTP context, or the root
    /// context when dispatched from `on_tick`).
    pub context_id: u32,
    pub target: String,
    pub headers: abi::HeaderPairs,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

/// What `on_http_call_response` reads through the call-response header map and body buffer.
#[derive(Debug, Clone, Default)]
pub struct CallResponse {
    pub headers: abi::HeaderPairs,
    pub body: Vec<u8>,
    pub dispatch_status: Option<String>,
}

/// Host-side state of one VM instance (wasmtime store data).
pub struct VmState {
    pub worker: usize,
    pub filter: String,
    pub shared: Arc<Shared>,
    pub env: Vec<(String, String)>,
    memory: Option<Memory>,
    alloc: Option<TypedFunc<i32, i32>>,
    pub step: Step,
    pub current_context: u32,
    pub current_root: u32,
    pub root_configs: HashMap<u32, Vec<u8>>,
    pub tick_periods: HashMap<u32, u64>,
    pub stream: Option<Rc<RefCell<StreamData>>>,
    pub call_response: Option<CallResponse>,
    pub effects: Vec<Effect>,
    next_token: u32,
    pub server_host_name: String,
    /// Names the "resolver" knows, as nginx's `resolver` would (never /etc/hosts).
    pub resolver: Arc<HashMap<String, std::net::IpAddr>>,
    /// Partial stdout/stderr lines.
    stdio: [Vec<u8>; 2],
}

impl VmState {
    fn log(&self, level: LogLevel, message: String) {
        self.shared.log(self.worker, &self.filter, level, message);
    }

    fn host_error(&self, message: String) {
        self.shared.log(
            self.worker,
            &self.filter,
            LogLevel::Error,
            format!("[host] {message}"),
        );
    }
}

/// An instantiated filter with its store.
pub struct Vm {
    pub store: Store<VmState>,
    instance: Instance,
    pub next_context_id: u32,
}

type HostResult<T> = wasmtime::Result<T>;

fn trap(msg: impl Into<String>) -> wasmtime::Error {
    wasmtime::Error::msg(msg.into())
}

fn memory(caller: &mut Caller<'_, VmState>) -> HostResult<Memory> {
    if let Some(m) = caller.data().memory {
        return Ok(m);
    }
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => {
            caller.data_mut().memory = Some(m);
            Ok(m)
        }
        _ => Err(trap("filter exports no memory")),
    }
}

fn read_bytes(caller: &mut Caller<'_, VmState>, ptr: i32, len: i32) -> HostResult<Option<Vec<u8>>> {
    let mem = memory(caller)?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    if len == 0 {
        return Ok(Some(Vec::new()));
    }
    let data = mem.data(&caller);
    Ok(data.get(ptr..ptr.saturating_add(len)).map(|s| s.to_vec()))
}

fn read_string(caller: &mut Caller<'_, VmState>, ptr: i32, len: i32) -> HostResult<Option<String>> {
    Ok(read_bytes(caller, ptr, len)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

fn write_u32(caller: &mut Caller<'_, VmState>, ptr: i32, value: u32) -> HostResult<bool> {
    let mem = memory(caller)?;
    Ok(mem
        .write(caller, ptr as u32 as usize, &value.to_le_bytes())
        .is_ok())
}

fn write_u64(caller: &mut Caller<'_, VmState>, ptr: i32, value: u64) -> HostResult<bool> {
    let mem = memory(caller)?;
    Ok(mem
        .write(caller, ptr as u32 as usize, &value.to_le_bytes())
        .is_ok())
}

/// Copies `bytes` into guest memory allocated by the filter's
/// `proxy_on_memory_allocate` and stores pointer and size at the return slots.
fn return_bytes(
    caller: &mut Caller<'_, VmState>,
    bytes: &[u8],
    ret_ptr: i32,
    ret_size: i32,
) -> HostResult<i32> {
    let alloc = match caller.data().alloc.clone() {
        Some(f) => f,
        None => {
            let f = caller
                .get_export("proxy_on_memory_allocate")
                .or_else(|| caller.get_export("malloc"))
                .and_then(|e| e.into_func())
                .ok_or_else(|| trap("filter exports no proxy_on_memory_allocate"))?;
            let typed = f.typed::<i32, i32>(&caller)?;
            caller.data_mut().alloc = Some(typed.clone());
            typed
        }
    };
    let addr = if bytes.is_empty() {
        0
    } else {
        alloc.call(&mut *caller, bytes.len() as i32)?
    };
    if !bytes.is_empty() {
        if addr == 0 {
            return Ok(status::INTERNAL_FAILURE);
        }
        let mem = memory(caller)?;
        if mem
            .write(&mut *caller, addr as u32 as usize, bytes)
            .is_err()
        {
            return Ok(status::INTERNAL_FAILURE);
        }
    }
    if !write_u32(caller, ret_ptr, addr as u32)?
        || !write_u32(caller, ret_size, bytes.len() as u32)?
    {
        return Ok(status::BAD_ARGUMENT);
    }
    Ok(status::OK)
}

fn step_name(step: Step) -> &'static str {
    match step {
        Step::Idle => "idle",
        Step::VmStart => "on_vm_start",
        Step::Configure => "on_configure",
        Step::RequestHeaders => "on_request_headers",
        Step::RequestBody => "on_request_body",
        Step::ResponseHeaders => "on_response_headers",
        Step::ResponseBody => "on_response_body",
        Step::Log => "on_log",
        Step::Done => "on_done",
        Step::Tick => "on_tick",
        Step::DispatchResponse => "on_dispatch_response",
    }
}

impl Vm {
    /// Instantiates the module, runs `_initialize` (reactor) or `_start` (command),
    /// as ngx_wasm_module does before creating root contexts.
    pub fn instantiate(
        engine: &Engine,
        module: &FilterModule,
        state: VmState,
    ) -> Result<Vm, HostError> {
        let mut store = Store::new(engine, state);
        let linker = build_linker(engine, module).map_err(|e| HostError::Instantiate {
            filter: module.name.clone(),
            reason: format!("{e:#}"),
        })?;
        let instance = linker
            .instantiate(&mut store, &module.module)
            .map_err(|e| HostError::Instantiate {
                filter: module.name.clone(),
                reason: format!("{e:#}"),
            })?;
        let mut vm = Vm {
            store,
            instance,
            next_context_id: 1,
        };
        for entry in ["_initialize", "_start"] {
            if let Some(f) = vm.instance.get_func(&mut vm.store, entry) {
                f.call(&mut vm.store, &[], &mut [])
                    .map_err(|e| HostError::Instantiate {
                        filter: module.name.clone(),
                        reason: format!("{entry}: {e:#}"),
                    })?;
                break;
            }
        }
        Ok(vm)
    }

    /// Calls an export with i32 params; a missing export counts as "not implemented"
    /// and yields `Ok(None)` (the SDK exports all of them).
    pub fn call(&mut self, name: &str, args: &[i32]) -> wasmtime::Result<Option<i32>> {
        let Some(func) = self.instance.get_func(&mut self.store, name) else {
            return Ok(None);
        };
        let params: Vec<Val> = args.iter().map(|a| Val::I32(*a)).collect();
        let ty = func.ty(&self.store);
        let mut results: Vec<Val> = ty.results().map(|_| Val::I32(0)).collect();
        func.call(&mut self.store, &params, &mut results)?;
        Ok(results.first().and_then(|v| v.i32()))
    }

    pub fn new_context_id(&mut self) -> u32 {
        let id = self.next_context_id;
        self.next_context_id += 1;
        id
    }
}

fn build_linker(engine: &Engine, module: &FilterModule) -> wasmtime::Result<Linker<VmState>> {
    let mut linker: Linker<VmState> = Linker::new(engine);
    define_proxy_functions(&mut linker)?;
    define_wasi_functions(&mut linker)?;
    // Proxy-wasm functions ngx_wasm_module does not implement (gRPC, shared-queue
    // resolution, …) still link; calling one logs "NYI" and returns Unimplemented.
    for import in module.module.imports() {
        if import.module() != "env" {
            continue;
        }
        if let ExternType::Func(fty) = import.ty() {
            if defined_proxy_names().contains(&import.name()) {
                continue;
            }
            let name = import.name().to_string();
            let results: Vec<ValType> = fty.results().collect();
            linker.func_new(
                "env",
                import.name(),
                fty.clone(),
                move |caller, _params, out| {
                    caller.data().host_error(format!("NYI - {name}"));
                    for (slot, ty) in out.iter_mut().zip(results.iter()) {
                        *slot = match ty {
                            ValType::I64 => Val::I64(status::UNIMPLEMENTED as i64),
                            _ => Val::I32(status::UNIMPLEMENTED),
                        };
                    }
                    Ok(())
                },
            )?;
        }
    }
    Ok(linker)
}

fn defined_proxy_names() -> &'static [&'static str] {
    &[
        "proxy_log",
        "proxy_get_current_time_nanoseconds",
        "proxy_set_tick_period_milliseconds",
        "proxy_get_buffer_bytes",
        "proxy_set_buffer_bytes",
        "proxy_get_header_map_pairs",
        "proxy_set_header_map_pairs",
        "proxy_get_header_map_value",
        "proxy_add_header_map_value",
        "proxy_replace_header_map_value",
        "proxy_remove_header_map_value",
        "proxy_get_property",
        "proxy_set_property",
        "proxy_get_shared_data",
        "proxy_set_shared_data",
        "proxy_continue_stream",
        "proxy_send_local_response",
        "proxy_http_call",
        "proxy_set_effective_context",
        "proxy_define_metric",
        "proxy_increment_metric",
        "proxy_record_metric",
        "proxy_get_metric",
    ]
}

fn define_proxy_functions(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut c: Caller<'_, VmState>, level: i32, ptr: i32, len: i32| -> HostResult<i32> {
            let Some(level) = LogLevel::from_abi(level) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let Some(msg) = read_string(&mut c, ptr, len)? else {
                return Ok(status::BAD_ARGUMENT);
            };
            c.data().log(level, msg);
            Ok(status::OK)
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: Caller<'_, VmState>, ret: i32| -> HostResult<i32> {
            let now = c.data().shared.clock.now_nanos();
            Ok(if write_u64(&mut c, ret, now)? {
                status::OK
            } else {
                status::BAD_ARGUMENT
            })
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: Caller<'_, VmState>, period: i32| -> HostResult<i32> {
            let st = c.data_mut();
            if st.current_context != st.current_root || st.current_root == 0 {
                return Err(trap("can only set tick_period in root context"));
            }
            let root = st.current_root;
            let period = period as u32 as u64;
            if period != 0 && st.tick_periods.get(&root).copied().unwrap_or(0) != 0 {
                return Err(trap("tick_period already set"));
            }
            st.tick_periods.insert(root, period);
            Ok(status::OK)
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Caller<'_, VmState>,
         buf: i32,
         start: i32,
         max: i32,
         ret_ptr: i32,
         ret_size: i32|
         -> HostResult<i32> {
            let step = c.data().step;
            let bytes: Vec<u8> = match buf {
                abi::buffer::PLUGIN_CONFIGURATION => {
                    let root = c.data().current_root;
                    match c.data().root_configs.get(&root) {
                        Some(cfg) => cfg.clone(),
                        None => return Ok(status::NOT_FOUND),
                    }
                }
                abi::buffer::VM_CONFIGURATION => Vec::new(),
                abi::buffer::HTTP_REQUEST_BODY => {
                    if !matches!(step, Step::RequestHeaders | Step::RequestBody | Step::Log) {
                        return Err(trap(
                            "can only get request body during \"on_request_body\", \"on_log\"",
                        ));
                    }
                    let Some(stream) = c.data().stream.clone() else {
                        return Ok(status::NOT_FOUND);
                    };
                    let s = stream.borrow();
                    if let Some(path) = &s.request_body_file {
                        c.data().log(LogLevel::Error, spilled_body_message(path));
                        return Ok(status::NOT_FOUND);
                    }
                    s.request_body.clone()
                }
                abi::buffer::HTTP_RESPONSE_BODY => {
                    if !matches!(step, Step::ResponseBody | Step::Log) {
                        return Err(trap(
                            "can only get response body during \"on_response_body\"",
                        ));
                    }
                    match &c.data().stream {
                        Some(s) => s.borrow().response_body.clone(),
                        None => return Ok(status::NOT_FOUND),
                    }
                }
                abi::buffer::HTTP_CALL_RESPONSE_BODY => match &c.data().call_response {
                    Some(r) => r.body.clone(),
                    None => return Ok(status::NOT_FOUND),
                },
                _ => {
                    c.data()
                        .host_error(format!("NYI - get_buffer bad buf_type: {buf}"));
                    return Ok(status::BAD_ARGUMENT);
                }
            };
            let start = start as u32 as usize;
            let max = max as u32 as usize;
            if start > bytes.len() {
                return Ok(status::BAD_ARGUMENT);
            }
            let end = start.saturating_add(max).min(bytes.len());
            let slice = bytes[start..end].to_vec();
            if slice.is_empty() && buf != abi::buffer::PLUGIN_CONFIGURATION {
                // The SDK maps NotFound to `None` for an empty body.
                return Ok(status::NOT_FOUND);
            }
            return_bytes(&mut c, &slice, ret_ptr, ret_size)
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: Caller<'_, VmState>,
         buf: i32,
         start: i32,
         size: i32,
         ptr: i32,
         len: i32|
         -> HostResult<i32> {
            let Some(value) = read_bytes(&mut c, ptr, len)? else {
                return Ok(status::BAD_ARGUMENT);
            };
            let step = c.data().step;
            let Some(stream) = c.data().stream.clone() else {
                return Ok(status::NOT_FOUND);
            };
            let mut s = stream.borrow_mut();
            let target = match buf {
                abi::buffer::HTTP_REQUEST_BODY => {
                    if !matches!(step, Step::RequestHeaders | Step::RequestBody) {
                        return Err(trap("can only set request body during \"on_request_body\""));
                    }
                    if s.request_body_file.is_some() {
                        return Ok(set_spilled_body(c.data(), &value));
                    }
                    &mut s.request_body
                }
                abi::buffer::HTTP_RESPONSE_BODY => {
                    if step != Step::ResponseBody {
                        return Err(trap(
                            "can only set response body during \"on_response_body\"",
                        ));
                    }
                    &mut s.response_body
                }
                _ => return Ok(status::BAD_ARGUMENT),
            };
            splice_buffer(target, start as u32 as usize, size as u32 as usize, &value);
            Ok(status::OK)
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Caller<'_, VmState>, map: i32, ret_ptr: i32, ret_size: i32| -> HostResult<i32> {
            let Some(pairs) = get_map(c.data(), map) else {
                return Ok(status::NOT_FOUND);
            };
            let bytes = abi::serialize_pairs(&pairs);
            return_bytes(&mut c, &bytes, ret_ptr, ret_size)
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: Caller<'_, VmState>, map: i32, ptr: i32, len: i32| -> HostResult<i32> {
            let Some(bytes) = read_bytes(&mut c, ptr, len)? else {
                return Ok(status::BAD_ARGUMENT);
            };
            let Some(pairs) = abi::deserialize_pairs(&bytes) else {
                return Ok(status::BAD_ARGUMENT);
            };
            check_map_writable(c.data(), map)?;
            let Some(stream) = c.data().stream.clone() else {
                return Ok(status::NOT_FOUND);
            };
            let mut s = stream.borrow_mut();
            match map {
                abi::map::HTTP_REQUEST_HEADERS => {
                    // ngx_proxy_wasm_hfuncs_set_header_map_pairs: clear every
                    // element, then SET each pair (ngx_proxy_wasm_maps_set_all).
                    s.request_headers.clear_all();
                    for (k, v) in pairs {
                        match k.as_str() {
                            ":path" => s.path = v,
                            ":method" => s.method = v,
                            k if k.starts_with(':') => {}
                            k => s.request_headers.set(k, &v),
                        }
                    }
                }
                abi::map::HTTP_RESPONSE_HEADERS => {
                    let mut regular = Vec::new();
                    for (k, v) in pairs {
                        match k.as_str() {
                            ":status" => {
                                if let Ok(code) = v.parse() {
                                    s.response_status = code;
                                }
                            }
                            k if k.starts_with(':') => {}
                            _ => regular.push((k.to_ascii_lowercase(), v)),
                        }
                    }
                    s.response_headers = regular;
                }
                _ => return Ok(status::BAD_ARGUMENT),
            }
            Ok(status::OK)
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Caller<'_, VmState>,
         map: i32,
         kp: i32,
         kl: i32,
         ret_ptr: i32,
         ret_size: i32|
         -> HostResult<i32> {
            let Some(key) = read_string(&mut c, kp, kl)? else {
                return Ok(status::BAD_ARGUMENT);
            };
            let Some(pairs) = get_map(c.data(), map) else {
                return Ok(status::NOT_FOUND);
            };
            match header_value(&pairs, &key) {
                Some(v) => {
                    let v = v.as_bytes().to_vec();
                    return_bytes(&mut c, &v, ret_ptr, ret_size)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: Caller<'_, VmState>,
         map: i32,
         kp: i32,
         kl: i32,
         vp: i32,
         vl: i32|
         -> HostResult<i32> { edit_map(&mut c, map, kp, kl, Some((vp, vl)), MapEdit::Add) },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: Caller<'_, VmState>,
         map: i32,
         kp: i32,
         kl: i32,
         vp: i32,
         vl: i32|
         -> HostResult<i32> {
            edit_map(&mut c, map, kp, kl, Some((vp, vl)), MapEdit::Replace)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Caller<'_, VmState>, map: i32, kp: i32, kl: i32| -> HostResult<i32> {
            edit_map(&mut c, map, kp, kl, None, MapEdit::Remove)
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: Caller<'_, VmState>,
         pp: i32,
         pl: i32,
         ret_ptr: i32,
         ret_size: i32|
         -> HostResult<i32> {
            let Some(raw) = read_bytes(&mut c, pp, pl)? else {
                return Ok(status::BAD_ARGUMENT);
            };
            let path: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            match property(c.data(), &path) {
                Some(v) => return_bytes(&mut c, v.as_bytes(), ret_ptr, ret_size),
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;

    // Only `request.query` and `ngx.*` are writable in ngx_wasm_module; we
    // support `request.query` and refuse the rest.
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: Caller<'_, VmState>, pp: i32, pl: i32, vp: i32, vl: i32| -> HostResult<i32> {
            let Some(raw) = read_bytes(&mut c, pp, pl)? else {
                return Ok(status::BAD_ARGUMENT);
            };
            let Some(value) = read_string(&mut c, vp, vl)? else {
                return Ok(status::BAD_ARGUMENT);
            };
            let path: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            let Some(stream) = c.data().stream.clone() else {
                return Ok(status::NOT_FOUND);
            };
            let mut s = stream.borrow_mut();
            match path
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice()
            {
                ["request", "query"] | ["ngx", "args"] => {
                    let base = s.path.split('?').next().unwrap_or("").to_string();
                    s.path = if value.is_empty() {
                        base
                    } else {
                        format!("{base}?{value}")
                    };
                    Ok(status::OK)
                }
                // Kong proxies to `$upstream_uri` (its nginx template sets it with `set`,
                // so it is writable); `:path` changes do not reach Kong's upstream.
                ["ngx", "upstream_uri"] if s.upstream_uri.is_some() => {
                    s.upstream_uri = Some(value);
                    Ok(status::OK)
                }
                ["ngx", var] => {
                    let var = var.to_string();
                    drop(s);
                    Err(trap(format!("variable \"{var}\" is not changeable")))
                }
                _ => Ok(status::NOT_FOUND),
            }
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: Caller<'_, VmState>,
         kp: i32,
         kl: i32,
         ret_ptr: i32,
         ret_size: i32,
         ret_cas: i32|
         -> HostResult<i32> {
            let Some(key) = read_string(&mut c, kp, kl)? else {
                return Ok(status::BAD_ARGUMENT);
            };
            let found = c.data().shared.kv.lock().get(&key);
            match found {
                None => Err(trap(format!(
                    "no shm_kv zone for key \"{key}\" (configure nginx_wasm_shm_kv)"
                ))),
                Some(None) => Ok(status::NOT_FOUND),
                Some(Some((value, cas))) => {
                    let rc = return_bytes(&mut c, &value, ret_ptr, ret_size)?;
                    if rc == status::OK && !write_u32(&mut c, ret_cas, cas)? {
                        return Ok(status::BAD_ARGUMENT);
                    }
                    Ok(rc)
                }
            }
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: Caller<'_, VmState>,
         kp: i32,
         kl: i32,
         vp: i32,
         vl: i32,
         cas: i32|
         -> HostResult<i32> {
            let Some(key) = read_string(&mut c, kp, kl)? else {
                return Ok(status::BAD_ARGUMENT);
            };
            let Some(value) = read_bytes(&mut c, vp, vl)? else {
                return Ok(status::BAD_ARGUMENT);
            };
            let r = c.data().shared.kv.lock().set(&key, &value, cas as u32);
            match r {
                KvSet::Ok => Ok(status::OK),
                KvSet::CasMismatch => Ok(status::CAS_MISMATCH),
                KvSet::NoZone => Err(trap(format!(
                    "no shm_kv zone for key \"{key}\" (configure nginx_wasm_shm_kv)"
                ))),
            }
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: Caller<'_, VmState>, kind: i32| -> HostResult<i32> {
            if kind != 0 && kind != 1 {
                c.data()
                    .host_error(format!("NYI - continue stream type: {kind}"));
                return Ok(status::BAD_ARGUMENT);
            }
            if c.data().stream.is_some() {
                c.data_mut().effects.push(Effect::ContinueStream);
            }
            Ok(status::OK)
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: Caller<'_, VmState>,
         code: i32,
         _dp: i32,
         _dl: i32,
         bp: i32,
         bl: i32,
         hp: i32,
         hl: i32,
         _grpc: i32|
         -> HostResult<i32> {
            let Some(body) = read_bytes(&mut c, bp, bl)? else {
                return Ok(status::BAD_ARGUMENT);
            };
            let Some(hbytes) = read_bytes(&mut c, hp, hl)? else {
                return Ok(status::BAD_ARGUMENT);
            };
            let Some(headers) = abi::deserialize_pairs(&hbytes) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let step = c.data().step;
            let Some(stream) = c.data().stream.clone() else {
                return Ok(status::BAD_ARGUMENT);
            };
            let mut s = stream.borrow_mut();
            let code = u16::try_from(code).unwrap_or(500);
            // ngx_wasm_module appends a line feed to a non-empty local body
            // (ngx_proxy_wasm_host.c, send_local_response, `lf`).
            let mut body = body;
            if !body.is_empty() {
                body.push(b'\n');
            }
            match step {
                Step::RequestHeaders | Step::RequestBody | Step::DispatchResponse
                    if !s.response_started =>
                {
                    if s.local_response.is_some() {
                        drop(s);
                        c.data().host_error("local response already stashed".into());
                        return Ok(status::BAD_ARGUMENT);
                    }
                    let headers = headers
                        .into_iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v))
                        .collect();
                    s.local_response = Some(LocalResponse {
                        status: code,
                        headers,
                        body,
                    });
                    Ok(status::OK)
                }
                // Within the header filter the response is overridden in place:
                // status and body change, the given headers are ignored.
                Step::ResponseHeaders => {
                    s.response_status = code;
                    s.response_body = body;
                    s.local_response = Some(LocalResponse {
                        status: code,
                        headers: Vec::new(),
                        body: Vec::new(),
                    });
                    Ok(status::OK)
                }
                _ => {
                    drop(s);
                    c.data().host_error(format!(
                        "cannot send local response during \"{}\": response already sent",
                        step_name(step)
                    ));
                    Ok(status::BAD_ARGUMENT)
                }
            }
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: Caller<'_, VmState>,
         up: i32,
         ul: i32,
         hp: i32,
         hl: i32,
         bp: i32,
         bl: i32,
         _tp: i32,
         _tl: i32,
         timeout: i32,
         ret_token: i32|
         -> HostResult<i32> {
            let step = c.data().step;
            if !matches!(step, Step::RequestHeaders | Step::RequestBody | Step::Tick | Step::DispatchResponse) {
                return Err(trap(
                    "can only send HTTP dispatch during \"on_request_headers\", \"on_request_body\", \"on_tick\", \"on_dispatch_response\"",
                ));
            }
            let Some(target) = read_string(&mut c, up, ul)? else { return Ok(status::BAD_ARGUMENT) };
            let Some(hbytes) = read_bytes(&mut c, hp, hl)? else { return Ok(status::BAD_ARGUMENT) };
            let Some(headers) = abi::deserialize_pairs(&hbytes) else { return Ok(status::BAD_ARGUMENT) };
            let Some(body) = read_bytes(&mut c, bp, bl)? else { return Ok(status::BAD_ARGUMENT) };
            // ngx_http_proxy_wasm_dispatch.c: a call that fails while the filter
            // is still in the host call traps (`ngx_http_proxy_wasm_dispatch_err`
            // → `ngx_wavm_instance_trap_printf`); measured by hand: no or empty
            // `:method`/`:path`, or an empty target, give the request a 500.
            let missing = |name: &str| header_value(&headers, name).is_none_or(str::is_empty);
            if missing(":method") {
                return Err(trap("dispatch failed: no :method"));
            }
            if missing(":path") {
                return Err(trap("dispatch failed: no :path"));
            }
            if target.is_empty() {
                return Err(trap("dispatch failed: tcp socket - no host"));
            }
            let st = c.data_mut();
            st.next_token += 1;
            let token = st.next_token;
            let context_id = st.current_context;
            st.effects.push(Effect::Dispatch(DispatchRequest {
                token,
                context_id,
                target,
                headers,
                body,
                timeout: Duration::from_millis(timeout.max(0) as u64),
            }));
            Ok(if write_u32(&mut c, ret_token, token)? { status::OK } else { status::BAD_ARGUMENT })
        },
    )?;

    // A no-op in ngx_wasm_module (ngx_proxy_wasm_host.c): it returns Ok and changes nothing.
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |_c: Caller<'_, VmState>, _ctx: i32| -> HostResult<i32> { Ok(status::OK) },
    )?;

    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: Caller<'_, VmState>, kind: i32, np: i32, nl: i32, ret_id: i32| -> HostResult<i32> {
            let Some(name) = read_string(&mut c, np, nl)? else {
                return Ok(status::BAD_ARGUMENT);
            };
            let full = format!("pw:{}:{}", c.data().filter, name);
            let id = c.data().shared.metrics.lock().define(full, kind);
            match id {
                Some(id) => Ok(if write_u32(&mut c, ret_id, id)? {
                    status::OK
                } else {
                    status::BAD_ARGUMENT
                }),
                None => Ok(status::BAD_ARGUMENT),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: Caller<'_, VmState>, id: i32, by: i64| -> HostResult<i32> {
            Ok(if c.data().shared.metrics.lock().increment(id as u32, by) {
                status::OK
            } else {
                status::NOT_FOUND
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |c: Caller<'_, VmState>, id: i32, value: i64| -> HostResult<i32> {
            Ok(if c.data().shared.metrics.lock().record(id as u32, value) {
                status::OK
            } else {
                status::NOT_FOUND
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: Caller<'_, VmState>, id: i32, ret: i32| -> HostResult<i32> {
            let v = c.data().shared.metrics.lock().get(id as u32);
            match v {
                Some(v) => Ok(if write_u64(&mut c, ret, v)? {
                    status::OK
                } else {
                    status::BAD_ARGUMENT
                }),
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    Ok(())
}

/// `set_buffer_bytes(start, size, value)`: replace `size` bytes at `start` with
/// `value`; `(0, 0, v)` prepends. ngx_wasm_module truncates the buffer to `start +
/// value` when `size` covers the rest (FACTS §6 "Body rewrite").
fn splice_buffer(buf: &mut Vec<u8>, start: usize, size: usize, value: &[u8]) {
    let start = start.min(buf.len());
    let end = start.saturating_add(size).min(buf.len());
    buf.splice(start..end, value.iter().copied());
}

#[derive(Clone, Copy)]
enum MapEdit {
    Add,
    Replace,
    Remove,
}

/// ngx_proxy_wasm_get_buffer_helper's error for a body nginx wrote to a temp file.
fn spilled_body_message(path: &str) -> String {
    format!("[wasm] cannot read request body buffered to file at \"{path}\"")
}

/// `proxy_set_buffer_bytes` on a request body nginx wrote to a temp file.
/// ngx_http_wasm_set_req_body only edits the in-memory buffers of the chain
/// (ngx_wasm_chain_clear/append skip the file buffer), so an empty value leaves
/// the body as it is; what a non-empty value would do to the proxied body is
/// not established, so the host refuses it (an error status; the Rust SDK's
/// `set_http_request_body` then panics and the request fails) rather than guess.
fn set_spilled_body(st: &VmState, value: &[u8]) -> i32 {
    if value.is_empty() {
        return status::OK;
    }
    st.host_error(
        "set_buffer on a request body buffered to a temp file is not modeled by this host \
         (body larger than client_body_buffer_size)"
            .to_string(),
    );
    status::INTERNAL_FAILURE
}

fn check_map_writable(st: &VmState, map: i32) -> HostResult<()> {
    let started = st
        .stream
        .as_ref()
        .map(|s| s.borrow().response_started)
        .unwrap_or(false);
    match map {
        abi::map::HTTP_REQUEST_HEADERS => match st.step {
            Step::RequestHeaders | Step::RequestBody => Ok(()),
            Step::DispatchResponse if !started => Ok(()),
            _ => Err(trap(
                "can only set request headers before response is produced",
            )),
        },
        abi::map::HTTP_RESPONSE_HEADERS => match st.step {
            Step::RequestHeaders | Step::RequestBody | Step::ResponseHeaders => Ok(()),
            Step::DispatchResponse if !started => Ok(()),
            _ => Err(trap(
                "can only set response headers before \"on_response_body\"",
            )),
        },
        _ => Ok(()),
    }
}

fn edit_map(
    c: &mut Caller<'_, VmState>,
    map: i32,
    kp: i32,
    kl: i32,
    value: Option<(i32, i32)>,
    edit: MapEdit,
) -> HostResult<i32> {
    let Some(key) = read_string(c, kp, kl)? else {
        return Ok(status::BAD_ARGUMENT);
    };
    let value = match value {
        Some((vp, vl)) => match read_string(c, vp, vl)? {
            Some(v) => v,
            None => return Ok(status::BAD_ARGUMENT),
        },
        None => String::new(),
    };
    if !matches!(
        map,
        abi::map::HTTP_REQUEST_HEADERS | abi::map::HTTP_RESPONSE_HEADERS
    ) {
        c.data()
            .host_error(format!("NYI - set_map bad map_type: {map}"));
        return Ok(status::BAD_ARGUMENT);
    }
    check_map_writable(c.data(), map)?;
    let Some(stream) = c.data().stream.clone() else {
        return Ok(status::NOT_FOUND);
    };
    let mut s = stream.borrow_mut();
    let lower = key.to_ascii_lowercase();
    // Pseudo-headers: `:path`/`:method` (request) and `:status` (response) are
    // writable; `:scheme`/`:authority` are read-only (maps.c special keys).
    if lower.starts_with(':') {
        match (map, lower.as_str(), edit) {
            (abi::map::HTTP_REQUEST_HEADERS, ":path", MapEdit::Add | MapEdit::Replace) => {
                s.path = value
            }
            (abi::map::HTTP_REQUEST_HEADERS, ":method", MapEdit::Add | MapEdit::Replace) => {
                s.method = value
            }
            (abi::map::HTTP_RESPONSE_HEADERS, ":status", MapEdit::Add | MapEdit::Replace) => {
                match value.parse() {
                    Ok(code) => s.response_status = code,
                    Err(_) => return Ok(status::BAD_ARGUMENT),
                }
            }
            _ => return Ok(status::BAD_ARGUMENT),
        }
        return Ok(status::OK);
    }
    if map == abi::map::HTTP_REQUEST_HEADERS {
        let list = &mut s.request_headers;
        match edit {
            MapEdit::Add => list.add(&key, &value),
            MapEdit::Replace => list.set(&key, &value),
            MapEdit::Remove => list.remove(&key),
        }
        return Ok(status::OK);
    }
    let pairs = &mut s.response_headers;
    match edit {
        MapEdit::Add => pairs.push((lower, value)),
        MapEdit::Replace => replace_header(pairs, &lower, &value),
        MapEdit::Remove => remove_header(pairs, &lower),
    }
    Ok(status::OK)
}

fn get_map(st: &VmState, map: i32) -> Option<abi::HeaderPairs> {
    match map {
        abi::map::HTTP_REQUEST_HEADERS => st.stream.as_ref().map(|s| s.borrow().request_pairs()),
        abi::map::HTTP_RESPONSE_HEADERS => st.stream.as_ref().map(|s| s.borrow().response_pairs()),
        abi::map::HTTP_CALL_RESPONSE_HEADERS => st.call_response.as_ref().map(|r| {
            let mut pairs = r.headers.clone();
            if let Some(ds) = &r.dispatch_status {
                // After `:status` when there is one (the module's special-key order).
                let at = usize::from(pairs.first().is_some_and(|(k, _)| k == ":status"));
                pairs.insert(at, (":dispatch_status".to_string(), ds.clone()));
            }
            pairs
        }),
        abi::map::HTTP_REQUEST_TRAILERS
        | abi::map::HTTP_RESPONSE_TRAILERS
        | abi::map::HTTP_CALL_RESPONSE_TRAILERS => Some(Vec::new()),
        _ => None,
    }
}

/// Properties ngx_wasm_module documents (docs/PROXY_WASM.md "Supported Properties").
fn property(st: &VmState, path: &[String]) -> Option<String> {
    let parts: Vec<&str> = path.iter().map(String::as_str).collect();
    match parts.as_slice() {
        ["plugin_name"] => return Some(st.filter.clone()),
        ["plugin_root_id"] => return Some(st.current_root.to_string()),
        ["request", "host"] => return Some(st.server_host_name.clone()),
        _ => {}
    }
    let s = st.stream.as_ref()?.borrow();
    let value = match parts.as_slice() {
        ["request", "path"] => s.path.clone(),
        ["request", "url_path"] => s.path.split('?').next().unwrap_or("").to_string(),
        ["request", "query"] => s
            .path
            .split_once('?')
            .map(|(_, q)| q.to_string())
            .unwrap_or_default(),
        ["request", "method"] => s.method.clone(),
        ["request", "scheme"] => s.scheme.clone(),
        ["request", "protocol"] => "HTTP/1.1".to_string(),
        ["request", "useragent"] => s.request_headers.get("user-agent")?.to_string(),
        ["request", "id"] => s.request_headers.get("x-request-id")?.to_string(),
        ["request", "referer"] => s.request_headers.get("referer")?.to_string(),
        ["request", "size"] => s.request_headers.get("content-length")?.to_string(),
        ["request", "time"] => {
            let n = s.request_started_nanos;
            format!("{}.{:03}", n / 1_000_000_000, (n / 1_000_000) % 1000)
        }
        ["request", "is_subrequest"] => "false".to_string(),
        ["request", "headers", name] => s.request_headers.get(name)?.to_string(),
        ["response", "code"] if s.response_status != 0 => s.response_status.to_string(),
        ["response", "headers", name] => header_value(&s.response_headers, name)?.to_string(),
        ["source", "address"] => s.client_addr.clone(),
        ["source", "port"] => s.client_port.to_string(),
        ["upstream", "address"] => s.upstream_addr.clone()?,
        ["ngx", "upstream_uri"] => s.upstream_uri.clone()?,
        ["ngx", "request_uri"] => s.path.clone(),
        ["ngx", "uri"] => s.path.split('?').next().unwrap_or("").to_string(),
        ["ngx", "args"] => s
            .path
            .split_once('?')
            .map(|(_, q)| q.to_string())
            .unwrap_or_default(),
        ["ngx", "request_method"] => s.method.clone(),
        ["kong", "route_id"] => s.kong_route_id.clone()?,
        ["kong", "service_id"] => s.kong_service_id.clone()?,
        ["connection", "mtls"] => "false".to_string(),
        _ => return None,
    };
    Some(value)
}

fn define_wasi_functions(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut c: Caller<'_, VmState>, fd: i32, iovs: i32, n: i32, written: i32| -> HostResult<i32> {
            let mem = memory(&mut c)?;
            let mut out = Vec::new();
            for i in 0..n.max(0) {
                let mut iov = [0u8; 8];
                if mem
                    .read(&c, (iovs as u32 as usize) + (i as usize) * 8, &mut iov)
                    .is_err()
                {
                    return Ok(ERRNO_FAULT);
                }
                let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]) as usize;
                let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]) as usize;
                match mem.data(&c).get(ptr..ptr.saturating_add(len)) {
                    Some(b) => out.extend_from_slice(b),
                    None => return Ok(ERRNO_FAULT),
                }
            }
            let (level, slot) = match fd {
                1 => (LogLevel::Info, 0),
                2 => (LogLevel::Error, 1),
                _ => return Ok(ERRNO_BADF),
            };
            // Line-buffered like a terminal, so `eprintln!` (several writes) is one log line.
            let st = c.data_mut();
            st.stdio[slot].extend_from_slice(&out);
            while let Some(nl) = st.stdio[slot].iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = st.stdio[slot].drain(..=nl).collect();
                let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                st.log(level, text);
            }
            Ok(if write_u32(&mut c, written, out.len() as u32)? {
                ERRNO_SUCCESS
            } else {
                ERRNO_FAULT
            })
        },
    )?;

    linker.func_wrap(
        WASI,
        "environ_sizes_get",
        |mut c: Caller<'_, VmState>, count: i32, size: i32| -> HostResult<i32> {
            let env = c.data().env.clone();
            let total: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
            let ok = write_u32(&mut c, count, env.len() as u32)?
                && write_u32(&mut c, size, total as u32)?;
            Ok(if ok { ERRNO_SUCCESS } else { ERRNO_FAULT })
        },
    )?;

    linker.func_wrap(
        WASI,
        "environ_get",
        |mut c: Caller<'_, VmState>, ptrs: i32, buf: i32| -> HostResult<i32> {
            let env = c.data().env.clone();
            let mem = memory(&mut c)?;
            let mut at = buf as u32;
            for (i, (k, v)) in env.iter().enumerate() {
                let entry = format!("{k}={v}\0");
                if mem.write(&mut c, at as usize, entry.as_bytes()).is_err()
                    || mem
                        .write(&mut c, ptrs as u32 as usize + i * 4, &at.to_le_bytes())
                        .is_err()
                {
                    return Ok(ERRNO_FAULT);
                }
                at += entry.len() as u32;
            }
            Ok(ERRNO_SUCCESS)
        },
    )?;

    linker.func_wrap(
        WASI,
        "args_sizes_get",
        |mut c: Caller<'_, VmState>, count: i32, size: i32| -> HostResult<i32> {
            let ok = write_u32(&mut c, count, 0)? && write_u32(&mut c, size, 0)?;
            Ok(if ok { ERRNO_SUCCESS } else { ERRNO_FAULT })
        },
    )?;
    linker.func_wrap(
        WASI,
        "args_get",
        |_c: Caller<'_, VmState>, _a: i32, _b: i32| -> HostResult<i32> { Ok(ERRNO_SUCCESS) },
    )?;

    linker.func_wrap(
        WASI,
        "proc_exit",
        |_c: Caller<'_, VmState>, code: i32| -> HostResult<()> {
            Err(trap(format!("proc_exit({code})")))
        },
    )?;

    linker.func_wrap(
        WASI,
        "random_get",
        |mut c: Caller<'_, VmState>, buf: i32, len: i32| -> HostResult<i32> {
            let mut bytes = vec![0u8; len as u32 as usize];
            rand::rng().fill_bytes(&mut bytes);
            let mem = memory(&mut c)?;
            Ok(if mem.write(&mut c, buf as u32 as usize, &bytes).is_ok() {
                ERRNO_SUCCESS
            } else {
                ERRNO_FAULT
            })
        },
    )?;

    // Both the realtime and the monotonic clock follow the host clock, so a test
    // that moves time moves it for WASI readers too.
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut c: Caller<'_, VmState>, id: i32, _precision: i64, ret: i32| -> HostResult<i32> {
            if !(0..=3).contains(&id) {
                return Ok(ERRNO_INVAL);
            }
            let now = c.data().shared.clock.now_nanos();
            Ok(if write_u64(&mut c, ret, now)? {
                ERRNO_SUCCESS
            } else {
                ERRNO_FAULT
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "clock_res_get",
        |mut c: Caller<'_, VmState>, _id: i32, ret: i32| -> HostResult<i32> {
            Ok(if write_u64(&mut c, ret, 1)? {
                ERRNO_SUCCESS
            } else {
                ERRNO_FAULT
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "sched_yield",
        |_c: Caller<'_, VmState>| -> HostResult<i32> { Ok(ERRNO_SUCCESS) },
    )?;
    linker.func_wrap(
        WASI,
        "fd_close",
        |_c: Caller<'_, VmState>, _fd: i32| -> HostResult<i32> { Ok(ERRNO_BADF) },
    )?;
    linker.func_wrap(
        WASI,
        "fd_seek",
        |_c: Caller<'_, VmState>, _fd: i32, _o: i64, _w: i32, _r: i32| -> HostResult<i32> {
            Ok(ERRNO_BADF)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_read",
        |_c: Caller<'_, VmState>, _fd: i32, _i: i32, _n: i32, _r: i32| -> HostResult<i32> {
            Ok(ERRNO_BADF)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_fdstat_get",
        |_c: Caller<'_, VmState>, _fd: i32, _r: i32| -> HostResult<i32> { Ok(ERRNO_BADF) },
    )?;
    linker.func_wrap(
        WASI,
        "fd_prestat_get",
        |_c: Caller<'_, VmState>, _fd: i32, _r: i32| -> HostResult<i32> { Ok(ERRNO_BADF) },
    )?;
    linker.func_wrap(
        WASI,
        "fd_prestat_dir_name",
        |_c: Caller<'_, VmState>, _fd: i32, _p: i32, _l: i32| -> HostResult<i32> { Ok(ERRNO_BADF) },
    )?;
    Ok(())
}

/// Builds the state for a fresh instance.
#[allow(clippy::too_many_arguments)]
pub fn new_state(
    worker: usize,
    filter: &str,
    shared: Arc<Shared>,
    env: Vec<(String, String)>,
    server_host_name: String,
    resolver: Arc<HashMap<String, std::net::IpAddr>>,
) -> VmState {
    VmState {
        worker,
        filter: filter.to_string(),
        shared,
        env,
        memory: None,
        alloc: None,
        step: Step::Idle,
        current_context: 0,
        current_root: 0,
        root_configs: HashMap::new(),
        tick_periods: HashMap::new(),
        stream: None,
        call_response: None,
        effects: Vec::new(),
        next_token: 0,
        server_host_name,
        resolver,
        stdio: [Vec::new(), Vec::new()],
    }
}
