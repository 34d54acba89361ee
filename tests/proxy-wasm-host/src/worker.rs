//! One nginx worker: a thread that owns one VM instance per filter module and
//! drives every request through its filter chain.
//!
//! The lifecycle follows ngx_wasm_module (docs/PROXY_WASM.md "Filters Execution
//! in Nginx" and "Current Limitations"):
//! request headers (eof always false) → request body (Kong: called once with the
//! whole body and eof = true, not at all without a body) → upstream → response
//! headers (eof always false; Pause is not supported there and is ignored with an
//! error log) → response body (per chunk; Pause enables buffering until eof) →
//! log → done → delete. A hook returning Pause stops the chain; it resumes on
//! `proxy_continue_stream` or, after dispatches, once all of them have answered.
//! A local response skips the rest of the request phase and the upstream; the
//! response hooks still run. A trap fails that request with 500 and the instance
//! is replaced by a fresh one for the next request.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use wasmtime::Engine;

use crate::abi::{self, LogLevel};
use crate::error::HostError;
use crate::host::{BodyMode, HostSettings, HttpRequest, HttpResponse, Upstream, UpstreamRequest};
use crate::io::{self, Io, WireRequest};
use crate::shared::Shared;
use crate::stream::{header_value, remove_header, RequestHeaders, Step, StreamData};
use crate::vm::{self, CallResponse, Effect, FilterModule, Vm};

/// Messages a worker thread receives.
pub enum WorkerMsg {
    AddChain {
        chain: usize,
        filters: Vec<(usize, Option<String>)>,
        reply: oneshot::Sender<Result<Vec<bool>, HostError>>,
    },
    Request {
        chain: usize,
        request: HttpRequest,
        upstream: Upstream,
        reply: oneshot::Sender<Result<HttpResponse, HostError>>,
    },
    DispatchDone {
        vm: usize,
        generation: u64,
        context_id: u32,
        token: u32,
        response: CallResponse,
    },
    UpstreamDone {
        stream: u64,
        result: Result<io::WireResponse, String>,
    },
    Tick {
        reply: Option<oneshot::Sender<()>>,
    },
    Stop,
}

struct Root {
    context_id: u32,
    config: Option<String>,
    configured: bool,
    next_tick_nanos: u64,
}

struct Slot {
    module: FilterModule,
    vm: Option<Vm>,
    generation: u64,
    roots: Vec<Root>,
}

struct ChainFilter {
    vm: usize,
    root: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    RequestHeaders,
    RequestBody,
    AwaitUpstream,
    ResponseHeaders,
    ResponseBody,
    Finished,
}

struct Stream {
    chain: usize,
    data: Rc<RefCell<StreamData>>,
    /// HTTP context id per chain position (in that position's VM).
    contexts: Vec<u32>,
    generations: Vec<u64>,
    stage: Stage,
    pos: usize,
    paused: bool,
    pending_dispatches: usize,
    /// Body chunks entering the filter at `pos`, the ones it let through, and
    /// the index of the next chunk to deliver.
    chunks_in: Vec<Vec<u8>>,
    chunks_out: Vec<Vec<u8>>,
    chunk_idx: usize,
    buffering: bool,
    upstream: Upstream,
    upstream_request: Option<UpstreamRequest>,
    reply: Option<oneshot::Sender<Result<HttpResponse, HostError>>>,
    trace: Vec<String>,
    local: bool,
    /// `proxy_continue_stream` was called from a hook whose return value does not
    /// decide the stream's fate (a dispatch response).
    resume_requested: bool,
}

pub struct Worker {
    id: usize,
    engine: Engine,
    shared: Arc<Shared>,
    settings: Arc<HostSettings>,
    io: Io,
    tx: Sender<WorkerMsg>,
    slots: Vec<Slot>,
    chains: HashMap<usize, Vec<ChainFilter>>,
    streams: HashMap<u64, Stream>,
    by_context: HashMap<(usize, u32), u64>,
    next_stream: u64,
}

enum HookResult {
    Continue,
    Pause,
    Trap,
}

impl Worker {
    pub fn new(
        id: usize,
        engine: Engine,
        modules: Vec<FilterModule>,
        shared: Arc<Shared>,
        settings: Arc<HostSettings>,
        io: Io,
        tx: Sender<WorkerMsg>,
    ) -> Result<Worker, HostError> {
        let mut worker = Worker {
            id,
            engine,
            shared,
            settings,
            io,
            tx,
            slots: Vec::new(),
            chains: HashMap::new(),
            streams: HashMap::new(),
            by_context: HashMap::new(),
            next_stream: 1,
        };
        for module in modules {
            worker.slots.push(Slot {
                module,
                vm: None,
                generation: 0,
                roots: Vec::new(),
            });
        }
        for i in 0..worker.slots.len() {
            worker.instantiate(i)?;
        }
        Ok(worker)
    }

    fn host_log(&self, filter: &str, level: LogLevel, message: String) {
        self.shared
            .log(self.id, filter, level, format!("[host] {message}"));
    }

    /// Creates a fresh instance for slot `i`, calls `on_vm_start` and re-creates
    /// and re-configures every root context it had (same ids).
    fn instantiate(&mut self, i: usize) -> Result<(), HostError> {
        let slot = &mut self.slots[i];
        let state = vm::new_state(
            self.id,
            &slot.module.name,
            Arc::clone(&self.shared),
            self.settings.env.clone(),
            self.settings.host_name.clone(),
            Arc::clone(&self.settings.resolver),
        );
        let mut vm = Vm::instantiate(&self.engine, &slot.module, state)?;
        slot.generation += 1;
        // Each root context gets on_context_create, on_vm_start and on_configure.
        let roots: Vec<(u32, Option<String>)> = slot
            .roots
            .iter()
            .map(|r| (r.context_id, r.config.clone()))
            .collect();
        let max_root = roots.iter().map(|r| r.0).max().unwrap_or(0);
        vm.next_context_id = max_root + 1;
        slot.vm = Some(vm);
        for (ctx, config) in roots {
            let ok = self.start_root(i, ctx, config.as_deref());
            self.arm_tick(i, ctx, ok);
        }
        Ok(())
    }

    /// Records the configure outcome and schedules the first tick one period
    /// after configuration, as nginx arms the tick timer in `set_tick_period`.
    fn arm_tick(&mut self, slot_idx: usize, ctx: u32, configured: bool) {
        let now = self.shared.clock.now_nanos();
        let period = self.slots[slot_idx]
            .vm
            .as_ref()
            .and_then(|vm| vm.store.data().tick_periods.get(&ctx).copied())
            .unwrap_or(0);
        if let Some(r) = self.slots[slot_idx]
            .roots
            .iter_mut()
            .find(|r| r.context_id == ctx)
        {
            r.configured = configured;
            r.next_tick_nanos = if period > 0 {
                now + period * 1_000_000
            } else {
                0
            };
        }
    }

    /// `proxy_on_context_create(root, 0)`, `proxy_on_vm_start`, `proxy_on_configure`.
    fn start_root(&mut self, i: usize, ctx: u32, config: Option<&str>) -> bool {
        let name = self.slots[i].module.name.clone();
        let Some(vm) = self.slots[i].vm.as_mut() else {
            return false;
        };
        let cfg = config.map(|c| c.as_bytes().to_vec()).unwrap_or_default();
        {
            let st = vm.store.data_mut();
            st.root_configs.insert(ctx, cfg.clone());
            st.current_context = ctx;
            st.current_root = ctx;
            st.stream = None;
        }
        let run =
            |vm: &mut Vm, step: Step, export: &str, args: &[i32]| -> Result<Option<i32>, String> {
                vm.store.data_mut().step = step;
                let r = vm.call(export, args).map_err(|e| format!("{e:#}"));
                vm.store.data_mut().step = Step::Idle;
                r
            };
        let result = (|| -> Result<bool, String> {
            run(vm, Step::Idle, "proxy_on_context_create", &[ctx as i32, 0])?;
            let started = run(vm, Step::VmStart, "proxy_on_vm_start", &[ctx as i32, 0])?;
            if started == Some(0) {
                return Ok(false);
            }
            let configured = run(
                vm,
                Step::Configure,
                "proxy_on_configure",
                &[ctx as i32, cfg.len() as i32],
            )?;
            Ok(configured != Some(0))
        })();
        match result {
            Ok(ok) => {
                if !ok {
                    self.host_log(
                        &name,
                        LogLevel::Error,
                        format!("filter \"{name}\" failed on_configure (root context {ctx})"),
                    );
                }
                ok
            }
            Err(trap) => {
                self.host_log(
                    &name,
                    LogLevel::Error,
                    format!("filter \"{name}\" trapped while starting: {trap}"),
                );
                // A fresh instance is made lazily at the next request.
                self.slots[i].vm = None;
                false
            }
        }
    }

    pub fn run(mut self, rx: Receiver<WorkerMsg>) {
        loop {
            let timeout = self.next_tick_wait();
            let msg = match timeout {
                Some(t) => match rx.recv_timeout(t) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        self.fire_ticks();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                },
                None => match rx.recv() {
                    Ok(m) => m,
                    Err(_) => return,
                },
            };
            match msg {
                WorkerMsg::Stop => return,
                WorkerMsg::AddChain {
                    chain,
                    filters,
                    reply,
                } => {
                    let r = self.add_chain(chain, filters);
                    let _ = reply.send(r);
                }
                WorkerMsg::Request {
                    chain,
                    request,
                    upstream,
                    reply,
                } => self.start_request(chain, request, upstream, reply),
                WorkerMsg::DispatchDone {
                    vm,
                    generation,
                    context_id,
                    token,
                    response,
                } => self.dispatch_done(vm, generation, context_id, token, response),
                WorkerMsg::UpstreamDone { stream, result } => self.upstream_done(stream, result),
                WorkerMsg::Tick { reply } => {
                    self.fire_ticks();
                    if let Some(r) = reply {
                        let _ = r.send(());
                    }
                }
            }
        }
    }

    /// With the system clock, ticks fire on their own; with a manual clock only
    /// when the test moves time (`Host::advance_clock`).
    fn next_tick_wait(&self) -> Option<Duration> {
        if self.shared.clock.is_manual() {
            return None;
        }
        let now = self.shared.clock.now_nanos();
        let mut next: Option<u64> = None;
        for slot in &self.slots {
            let Some(vm) = &slot.vm else { continue };
            for root in &slot.roots {
                let period = vm
                    .store
                    .data()
                    .tick_periods
                    .get(&root.context_id)
                    .copied()
                    .unwrap_or(0);
                if period == 0 || !root.configured {
                    continue;
                }
                let due = if root.next_tick_nanos == 0 {
                    now + period * 1_000_000
                } else {
                    root.next_tick_nanos
                };
                next = Some(next.map_or(due, |n: u64| n.min(due)));
            }
        }
        next.map(|due| Duration::from_nanos(due.saturating_sub(now)).max(Duration::from_millis(1)))
    }

    fn fire_ticks(&mut self) {
        let now = self.shared.clock.now_nanos();
        for i in 0..self.slots.len() {
            let roots: Vec<(u32, u64)> = {
                let slot = &self.slots[i];
                let Some(vm) = &slot.vm else { continue };
                slot.roots
                    .iter()
                    .filter(|r| r.configured)
                    .filter_map(|r| {
                        let p = vm
                            .store
                            .data()
                            .tick_periods
                            .get(&r.context_id)
                            .copied()
                            .unwrap_or(0);
                        (p > 0).then_some((r.context_id, p))
                    })
                    .collect()
            };
            for (ctx, period) in roots {
                let due = {
                    let Some(root) = self.slots[i].roots.iter_mut().find(|r| r.context_id == ctx)
                    else {
                        continue;
                    };
                    if root.next_tick_nanos == 0 {
                        root.next_tick_nanos = now + period * 1_000_000;
                        continue;
                    }
                    if root.next_tick_nanos > now {
                        continue;
                    }
                    root.next_tick_nanos = now + period * 1_000_000;
                    true
                };
                if due {
                    self.call_root(i, ctx, Step::Tick, "proxy_on_tick", &[ctx as i32], None);
                }
            }
        }
    }

    fn add_chain(
        &mut self,
        chain: usize,
        filters: Vec<(usize, Option<String>)>,
    ) -> Result<Vec<bool>, HostError> {
        let mut result = Vec::new();
        let mut members = Vec::new();
        for (slot_idx, config) in filters {
            if slot_idx >= self.slots.len() {
                return Err(HostError::UnknownFilter(format!("#{slot_idx}")));
            }
            if self.slots[slot_idx].vm.is_none() {
                self.instantiate(slot_idx)?;
            }
            let ctx = match self.slots[slot_idx].vm.as_mut() {
                Some(vm) => vm.new_context_id(),
                None => {
                    return Err(HostError::UnknownFilter(
                        self.slots[slot_idx].module.name.clone(),
                    ))
                }
            };
            self.slots[slot_idx].roots.push(Root {
                context_id: ctx,
                config: config.clone(),
                configured: false,
                next_tick_nanos: 0,
            });
            let ok = self.start_root(slot_idx, ctx, config.as_deref());
            self.arm_tick(slot_idx, ctx, ok);
            result.push(ok);
            members.push(ChainFilter {
                vm: slot_idx,
                root: ctx,
            });
        }
        self.chains.insert(chain, members);
        Ok(result)
    }

    /// The temp file nginx would write the request body to, when it does:
    /// only in Kong mode (the hook sees the whole body) and only when the body
    /// exceeds `client_body_buffer_size` (a body of exactly that size stays in
    /// memory). Named like nginx's `client_body_temp` files under Kong's prefix.
    fn spill_path(&self, sid: u64, body_len: usize) -> Option<String> {
        let spills = self.settings.body_mode == BodyMode::Kong
            && body_len > self.settings.client_body_buffer_size;
        spills.then(|| format!("/usr/local/kong/client_body_temp/{:010}", sid + 1))
    }

    fn start_request(
        &mut self,
        chain: usize,
        request: HttpRequest,
        upstream: Upstream,
        reply: oneshot::Sender<Result<HttpResponse, HostError>>,
    ) {
        let Some(members) = self.chains.get(&chain) else {
            let _ = reply.send(Err(HostError::UnknownChain(chain)));
            return;
        };
        let members: Vec<(usize, u32)> = members.iter().map(|m| (m.vm, m.root)).collect();
        let sid = self.next_stream;
        self.next_stream += 1;
        let mut headers: abi::HeaderPairs = request
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        if header_value(&headers, "host").is_none() {
            headers.insert(0, ("host".into(), self.settings.authority()));
        }
        let data = StreamData {
            method: request.method.clone(),
            path: request.path.clone(),
            scheme: request.scheme.clone(),
            authority: self.settings.authority(),
            request_headers: RequestHeaders::from_pairs(headers),
            client_addr: request.client_addr.clone(),
            client_port: request.client_port,
            request_started_nanos: self.shared.clock.now_nanos(),
            upstream_uri: request.upstream_uri.clone(),
            kong_route_id: request.kong_route_id.clone(),
            kong_service_id: request.kong_service_id.clone(),
            ..Default::default()
        };
        let body: Vec<u8> = request.body_chunks.concat();
        let data = StreamData {
            request_body_file: self.spill_path(sid, body.len()),
            ..data
        };
        let chunks_in = if body.is_empty() {
            Vec::new()
        } else {
            match self.settings.body_mode {
                BodyMode::Kong => vec![body],
                BodyMode::Streamed => request
                    .body_chunks
                    .iter()
                    .filter(|c| !c.is_empty())
                    .cloned()
                    .collect(),
            }
        };
        let mut stream = Stream {
            chain,
            data: Rc::new(RefCell::new(data)),
            contexts: Vec::new(),
            generations: Vec::new(),
            stage: Stage::RequestHeaders,
            pos: 0,
            paused: false,
            pending_dispatches: 0,
            chunks_in,
            chunks_out: Vec::new(),
            chunk_idx: 0,
            buffering: false,
            upstream,
            upstream_request: None,
            reply: Some(reply),
            trace: Vec::new(),
            local: false,
            resume_requested: false,
        };
        // Create one HTTP context per chain member; a member whose root failed to
        // configure (or whose instance is gone) fails the request like Kong does.
        let mut broken: Option<String> = None;
        for (slot_idx, root) in members {
            if self.slots[slot_idx].vm.is_none() {
                if let Err(e) = self.instantiate(slot_idx) {
                    broken = Some(format!("{e}"));
                    break;
                }
            }
            let configured = self.slots[slot_idx]
                .roots
                .iter()
                .any(|r| r.context_id == root && r.configured);
            if !configured {
                broken = Some(format!(
                    "filter \"{}\" is not configured",
                    self.slots[slot_idx].module.name
                ));
                break;
            }
            let generation = self.slots[slot_idx].generation;
            let Some(vm) = self.slots[slot_idx].vm.as_mut() else {
                break;
            };
            let ctx = vm.new_context_id();
            vm.store.data_mut().current_context = ctx;
            vm.store.data_mut().current_root = root;
            if let Err(e) = vm.call("proxy_on_context_create", &[ctx as i32, root as i32]) {
                broken = Some(format!("trap in on_context_create: {e:#}"));
                self.slots[slot_idx].vm = None;
                break;
            }
            stream.contexts.push(ctx);
            stream.generations.push(generation);
            self.by_context.insert((slot_idx, ctx), sid);
        }
        self.streams.insert(sid, stream);
        if let Some(reason) = broken {
            self.host_log("", LogLevel::Error, reason);
            self.fail(sid);
            return;
        }
        self.drive(sid);
    }

    fn member(&self, chain: usize, pos: usize) -> Option<(usize, u32)> {
        self.chains
            .get(&chain)
            .and_then(|m| m.get(pos))
            .map(|m| (m.vm, m.root))
    }

    /// Runs one hook of the filter at `pos` for stream `sid`.
    fn call_hook(
        &mut self,
        sid: u64,
        pos: usize,
        step: Step,
        export: &str,
        args: &[i32],
    ) -> HookResult {
        let Some(stream) = self.streams.get(&sid) else {
            return HookResult::Trap;
        };
        let Some((slot_idx, root)) = self.member(stream.chain, pos) else {
            return HookResult::Trap;
        };
        let Some(&ctx) = stream.contexts.get(pos) else {
            return HookResult::Trap;
        };
        if stream.generations.get(pos) != Some(&self.slots[slot_idx].generation) {
            return HookResult::Trap;
        }
        let data = Rc::clone(&stream.data);
        let name = self.slots[slot_idx].module.name.clone();
        let Some(vm) = self.slots[slot_idx].vm.as_mut() else {
            return HookResult::Trap;
        };
        {
            let st = vm.store.data_mut();
            st.step = step;
            st.current_context = ctx;
            st.current_root = root;
            st.stream = Some(data);
        }
        let mut full_args = vec![ctx as i32];
        full_args.extend_from_slice(args);
        let result = vm.call(export, &full_args);
        let effects = {
            let st = vm.store.data_mut();
            st.step = Step::Idle;
            st.stream = None;
            st.call_response = None;
            std::mem::take(&mut st.effects)
        };
        let action = match result {
            Ok(v) => v.unwrap_or(abi::action::CONTINUE),
            Err(e) => {
                self.host_log(
                    &name,
                    LogLevel::Error,
                    format!("filter \"{name}\" trapped in {export}: {e:#}"),
                );
                if let Some(s) = self.streams.get_mut(&sid) {
                    s.trace.push(format!("{name}:{export}:trap"));
                }
                self.replace_instance(slot_idx, Some(sid));
                return HookResult::Trap;
            }
        };
        let resumed = self.apply_effects(slot_idx, Some(sid), effects);
        if let Some(s) = self.streams.get_mut(&sid) {
            if step != Step::DispatchResponse {
                s.resume_requested = false;
            }
            let a = if action == abi::action::PAUSE {
                "pause"
            } else {
                "continue"
            };
            s.trace.push(format!("{name}:{export}:{a}"));
        }
        if action == abi::action::PAUSE && !resumed {
            HookResult::Pause
        } else {
            HookResult::Continue
        }
    }

    /// Carries out dispatches; returns whether the hook asked to continue its stream.
    fn apply_effects(&mut self, slot_idx: usize, sid: Option<u64>, effects: Vec<Effect>) -> bool {
        let mut resumed = false;
        for effect in effects {
            match effect {
                Effect::ContinueStream => {
                    resumed = true;
                    if let Some(s) = sid.and_then(|sid| self.streams.get_mut(&sid)) {
                        s.resume_requested = true;
                    }
                }
                Effect::Dispatch(call) => {
                    if let Some(sid) = sid {
                        if let Some(s) = self.streams.get_mut(&sid) {
                            s.pending_dispatches += 1;
                        }
                    }
                    let tx = self.tx.clone();
                    let generation = self.slots[slot_idx].generation;
                    let (ctx, token) = (call.context_id, call.token);
                    match io::resolve_target(&call.target, &self.settings.resolver) {
                        Ok(addr) => {
                            let wire = io::dispatch_wire_request(&call, addr);
                            self.io.submit(wire, move |result| {
                                let _ = tx.send(WorkerMsg::DispatchDone {
                                    vm: slot_idx,
                                    generation,
                                    context_id: ctx,
                                    token,
                                    response: io::call_response(result),
                                });
                            });
                        }
                        Err(reason) => {
                            let name = self.slots[slot_idx].module.name.clone();
                            self.host_log(
                                &name,
                                LogLevel::Error,
                                format!("dispatch to \"{}\" failed: {reason}", call.target),
                            );
                            let _ = tx.send(WorkerMsg::DispatchDone {
                                vm: slot_idx,
                                generation,
                                context_id: ctx,
                                token,
                                response: io::call_response(Err(reason)),
                            });
                        }
                    }
                }
            }
        }
        resumed
    }

    /// After a trap: every request with a context in the old instance fails with
    /// 500, and a fresh instance takes its place.
    fn replace_instance(&mut self, slot_idx: usize, current: Option<u64>) {
        let affected: Vec<u64> = self
            .by_context
            .iter()
            .filter(|((s, _), sid)| *s == slot_idx && Some(**sid) != current)
            .map(|(_, sid)| *sid)
            .collect();
        self.slots[slot_idx].vm = None;
        for sid in affected {
            self.fail(sid);
        }
        if let Err(e) = self.instantiate(slot_idx) {
            let name = self.slots[slot_idx].module.name.clone();
            self.host_log(
                &name,
                LogLevel::Error,
                format!("could not re-create instance: {e}"),
            );
        }
    }

    fn call_root(
        &mut self,
        slot_idx: usize,
        ctx: u32,
        step: Step,
        export: &str,
        args: &[i32],
        response: Option<CallResponse>,
    ) {
        let name = self.slots[slot_idx].module.name.clone();
        let Some(vm) = self.slots[slot_idx].vm.as_mut() else {
            return;
        };
        {
            let st = vm.store.data_mut();
            st.step = step;
            st.current_context = ctx;
            st.current_root = ctx;
            st.stream = None;
            st.call_response = response;
        }
        let result = vm.call(export, args);
        let effects = {
            let st = vm.store.data_mut();
            st.step = Step::Idle;
            st.call_response = None;
            std::mem::take(&mut st.effects)
        };
        match result {
            Ok(_) => {
                self.apply_effects(slot_idx, None, effects);
            }
            Err(e) => {
                self.host_log(
                    &name,
                    LogLevel::Error,
                    format!("filter \"{name}\" trapped in {export}: {e:#}"),
                );
                self.replace_instance(slot_idx, None);
            }
        }
    }

    fn dispatch_done(
        &mut self,
        slot_idx: usize,
        generation: u64,
        ctx: u32,
        token: u32,
        response: CallResponse,
    ) {
        if self.slots.get(slot_idx).map(|s| s.generation) != Some(generation) {
            return;
        }
        // The module counts the answer's real headers, not `:status`
        // (ngx_http_proxy_wasm.c, `ngx_http_proxy_wasm_on_dispatch_response`).
        let nheaders = response
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with(':'))
            .count() as i32;
        let body_len = response.body.len() as i32;
        let is_root = self.slots[slot_idx]
            .roots
            .iter()
            .any(|r| r.context_id == ctx);
        if is_root {
            self.call_root(
                slot_idx,
                ctx,
                Step::DispatchResponse,
                "proxy_on_http_call_response",
                &[ctx as i32, token as i32, nheaders, body_len, 0],
                Some(response),
            );
            return;
        }
        let Some(&sid) = self.by_context.get(&(slot_idx, ctx)) else {
            return;
        };
        let Some(pos) = self
            .streams
            .get(&sid)
            .and_then(|s| s.contexts.iter().position(|c| *c == ctx))
        else {
            return;
        };
        if let Some(vm) = self.slots[slot_idx].vm.as_mut() {
            vm.store.data_mut().call_response = Some(response);
        }
        if let HookResult::Trap = self.call_hook(
            sid,
            pos,
            Step::DispatchResponse,
            "proxy_on_http_call_response",
            &[token as i32, nheaders, body_len, 0],
        ) {
            return self.fail(sid);
        }
        let Some(s) = self.streams.get_mut(&sid) else {
            return;
        };
        s.pending_dispatches = s.pending_dispatches.saturating_sub(1);
        let asked = std::mem::take(&mut s.resume_requested);
        let local = s.data.borrow().local_response.is_some();
        // "the filter chain will resume once all dispatch calls have finished
        // executing" (PROXY_WASM.md, HTTP Dispatches).
        if s.paused
            && matches!(s.stage, Stage::RequestHeaders | Stage::RequestBody)
            && (local || asked || s.pending_dispatches == 0)
        {
            self.resume(sid);
        }
    }

    fn resume(&mut self, sid: u64) {
        let Some(s) = self.streams.get_mut(&sid) else {
            return;
        };
        if !s.paused {
            return;
        }
        s.paused = false;
        match s.stage {
            Stage::RequestHeaders => s.pos += 1,
            Stage::RequestBody => {
                let acc = std::mem::take(&mut s.data.borrow_mut().request_body);
                if !acc.is_empty() {
                    s.chunks_out.push(acc);
                }
                Self::next_body_filter(s);
            }
            _ => {}
        }
        self.drive(sid);
    }

    fn next_body_filter(s: &mut Stream) {
        s.chunks_in = std::mem::take(&mut s.chunks_out);
        s.chunk_idx = 0;
        s.buffering = false;
        s.pos += 1;
    }

    fn chain_len(&self, chain: usize) -> usize {
        self.chains.get(&chain).map_or(0, Vec::len)
    }

    /// Moves a stream forward until it pauses, waits for the upstream, or ends.
    fn drive(&mut self, sid: u64) {
        loop {
            let Some(s) = self.streams.get(&sid) else {
                return;
            };
            if s.paused {
                return;
            }
            let (stage, pos, chain) = (s.stage, s.pos, s.chain);
            let n = self.chain_len(chain);
            // A local response stashed during the request phase ends it.
            if matches!(stage, Stage::RequestHeaders | Stage::RequestBody)
                && s.data.borrow().local_response.is_some()
            {
                self.begin_local_response(sid);
                continue;
            }
            match stage {
                Stage::RequestHeaders => {
                    if pos >= n {
                        if let Some(s) = self.streams.get_mut(&sid) {
                            s.stage = Stage::RequestBody;
                            s.pos = 0;
                        }
                        continue;
                    }
                    let nheaders = s.data.borrow().request_pairs().len() as i32;
                    // eof is always false in header hooks (PROXY_WASM.md, Current Limitations #1).
                    match self.call_hook(
                        sid,
                        pos,
                        Step::RequestHeaders,
                        "proxy_on_request_headers",
                        &[nheaders, 0],
                    ) {
                        HookResult::Trap => return self.fail(sid),
                        HookResult::Pause => {
                            if let Some(s) = self.streams.get_mut(&sid) {
                                s.paused = true;
                            }
                            // A local response sent before pausing is served at once.
                            if self
                                .streams
                                .get(&sid)
                                .is_some_and(|s| s.data.borrow().local_response.is_some())
                            {
                                if let Some(s) = self.streams.get_mut(&sid) {
                                    s.paused = false;
                                }
                                continue;
                            }
                            return;
                        }
                        HookResult::Continue => {
                            if let Some(s) = self.streams.get_mut(&sid) {
                                s.pos += 1;
                            }
                        }
                    }
                }
                Stage::RequestBody => {
                    if pos >= n || s.chunks_in.is_empty() {
                        let body = self.streams[&sid].chunks_in.concat();
                        if let Some(s) = self.streams.get_mut(&sid) {
                            s.stage = Stage::AwaitUpstream;
                        }
                        self.send_upstream(sid, body);
                        return;
                    }
                    let idx = s.chunk_idx;
                    let last = idx + 1 >= s.chunks_in.len();
                    let chunk = s.chunks_in[idx].clone();
                    let len = {
                        let mut d = s.data.borrow_mut();
                        d.request_body.extend_from_slice(&chunk);
                        d.request_body.len() as i32
                    };
                    let result = self.call_hook(
                        sid,
                        pos,
                        Step::RequestBody,
                        "proxy_on_request_body",
                        &[len, last as i32],
                    );
                    let Some(s) = self.streams.get_mut(&sid) else {
                        return;
                    };
                    match result {
                        HookResult::Trap => return self.fail(sid),
                        HookResult::Pause if last => {
                            s.paused = true;
                            if s.data.borrow().local_response.is_some() {
                                s.paused = false;
                                continue;
                            }
                            return;
                        }
                        HookResult::Pause => {
                            // Keep buffering: the next call sees this chunk and the next.
                            s.chunk_idx += 1;
                        }
                        HookResult::Continue => {
                            let acc = std::mem::take(&mut s.data.borrow_mut().request_body);
                            if !acc.is_empty() {
                                s.chunks_out.push(acc);
                            }
                            if last {
                                Self::next_body_filter(s);
                            } else {
                                s.chunk_idx += 1;
                            }
                        }
                    }
                }
                Stage::AwaitUpstream => return,
                Stage::ResponseHeaders => {
                    if pos >= n {
                        if let Some(s) = self.streams.get_mut(&sid) {
                            s.data.borrow_mut().response_started = true;
                            s.stage = Stage::ResponseBody;
                            s.pos = 0;
                            s.chunk_idx = 0;
                            s.buffering = false;
                        }
                        continue;
                    }
                    let nheaders = s.data.borrow().response_pairs().len() as i32;
                    match self.call_hook(
                        sid,
                        pos,
                        Step::ResponseHeaders,
                        "proxy_on_response_headers",
                        &[nheaders, 0],
                    ) {
                        HookResult::Trap => return self.fail(sid),
                        HookResult::Pause => {
                            let name = self
                                .member(chain, pos)
                                .map(|(i, _)| self.slots[i].module.name.clone())
                                .unwrap_or_default();
                            self.host_log(&name, LogLevel::Error, "bad \"on_response_headers\" return action: \"PAUSE\" (yielding not supported in response phases)".into());
                            if let Some(s) = self.streams.get_mut(&sid) {
                                s.pos += 1;
                            }
                        }
                        HookResult::Continue => {
                            if let Some(s) = self.streams.get_mut(&sid) {
                                s.pos += 1;
                            }
                        }
                    }
                    // A local response sent from on_response_headers replaced the body.
                    if let Some(s) = self.streams.get_mut(&sid) {
                        let overridden = s.data.borrow().local_response.is_some() && !s.local;
                        if overridden {
                            let body = std::mem::take(&mut s.data.borrow_mut().response_body);
                            s.chunks_in = vec![body];
                            s.local = true;
                        }
                    }
                }
                Stage::ResponseBody => {
                    if pos >= n {
                        let body = self.streams[&sid].chunks_in.concat();
                        self.finish(sid, body);
                        return;
                    }
                    let s = &self.streams[&sid];
                    let total = s.chunks_in.len().max(1);
                    let idx = s.chunk_idx;
                    let last = idx + 1 >= total;
                    let chunk = s.chunks_in.get(idx).cloned().unwrap_or_default();
                    let buffering = s.buffering;
                    {
                        let mut d = s.data.borrow_mut();
                        d.response_body.extend_from_slice(&chunk);
                    }
                    if buffering && !last {
                        if let Some(s) = self.streams.get_mut(&sid) {
                            s.chunk_idx += 1;
                        }
                        continue;
                    }
                    let len = s.data.borrow().response_body.len() as i32;
                    let result = self.call_hook(
                        sid,
                        pos,
                        Step::ResponseBody,
                        "proxy_on_response_body",
                        &[len, last as i32],
                    );
                    let name = self
                        .member(chain, pos)
                        .map(|(i, _)| self.slots[i].module.name.clone())
                        .unwrap_or_default();
                    let Some(s) = self.streams.get_mut(&sid) else {
                        return;
                    };
                    let pause = match result {
                        HookResult::Trap => return self.fail(sid),
                        HookResult::Pause => true,
                        HookResult::Continue => false,
                    };
                    if pause && !last && !s.buffering {
                        // Buffering enabled (PROXY_WASM.md "Response Body Buffering").
                        s.buffering = true;
                        s.chunk_idx += 1;
                        continue;
                    }
                    if pause {
                        self.shared.log(self.id, &name, LogLevel::Error, "[host] invalid \"on_response_body\" return action (PAUSE): response body buffering already requested or complete".into());
                    }
                    let Some(s) = self.streams.get_mut(&sid) else {
                        return;
                    };
                    let out = std::mem::take(&mut s.data.borrow_mut().response_body);
                    s.chunks_out.push(out);
                    if last {
                        Self::next_body_filter(s);
                    } else {
                        s.chunk_idx += 1;
                    }
                }
                Stage::Finished => return,
            }
        }
    }

    fn begin_local_response(&mut self, sid: u64) {
        let Some(s) = self.streams.get_mut(&sid) else {
            return;
        };
        let Some(local) = s.data.borrow().local_response.clone() else {
            return;
        };
        {
            let mut d = s.data.borrow_mut();
            d.response_status = local.status;
            d.response_headers = local.headers.clone();
            d.response_body.clear();
        }
        s.local = true;
        s.paused = false;
        s.stage = Stage::ResponseHeaders;
        s.pos = 0;
        s.chunks_in = if local.body.is_empty() {
            Vec::new()
        } else {
            vec![local.body]
        };
        s.chunks_out.clear();
        s.chunk_idx = 0;
    }

    fn send_upstream(&mut self, sid: u64, body: Vec<u8>) {
        let Some(s) = self.streams.get_mut(&sid) else {
            return;
        };
        let (method, path, mut headers) = {
            let d = s.data.borrow();
            let path = match &d.upstream_uri {
                // Kong's `access.after`: `$upstream_uri` gets `?$args` appended when the
                // request has arguments. Applied after the filters' request headers (the
                // stricter of the two possible orders), so a filter that sets
                // `ngx.upstream_uri` with a query must also empty `ngx.args`.
                Some(uri) => match d.path.split_once('?') {
                    Some((_, args)) if !args.is_empty() => format!("{uri}?{args}"),
                    _ => uri.clone(),
                },
                None => d.path.clone(),
            };
            (d.method.clone(), path, d.request_headers.wire())
        };
        // The body may have been rewritten: nginx sends the new length.
        if header_value(&headers, "content-length").is_some() || !body.is_empty() {
            remove_header(&mut headers, "content-length");
            if !body.is_empty() || method != "GET" {
                headers.push(("content-length".into(), body.len().to_string()));
            }
        }
        remove_header(&mut headers, "transfer-encoding");
        s.upstream_request = Some(UpstreamRequest {
            method: method.clone(),
            path: path.clone(),
            headers: headers.clone(),
            body: body.clone(),
        });
        match &s.upstream {
            Upstream::Static {
                status,
                headers: h,
                body: b,
            } => {
                let response = io::WireResponse {
                    status: *status,
                    headers: h.clone(),
                    body: b.clone(),
                };
                let _ = self.tx.send(WorkerMsg::UpstreamDone {
                    stream: sid,
                    result: Ok(response),
                });
            }
            Upstream::Url { base, timeout } => {
                let parsed = url::Url::parse(base);
                let Ok(parsed) = parsed else {
                    let _ = self.tx.send(WorkerMsg::UpstreamDone {
                        stream: sid,
                        result: Err(format!("bad upstream url {base}")),
                    });
                    return;
                };
                let host = parsed.host_str().unwrap_or("127.0.0.1").to_string();
                let port = parsed.port_or_known_default().unwrap_or(80);
                let addr = match format!("{host}:{port}").parse::<std::net::SocketAddr>() {
                    Ok(a) => a,
                    Err(_) => {
                        match io::resolve_target(&format!("{host}:{port}"), &self.settings.resolver)
                        {
                            Ok(a) => a,
                            Err(e) => {
                                let _ = self.tx.send(WorkerMsg::UpstreamDone {
                                    stream: sid,
                                    result: Err(e),
                                });
                                return;
                            }
                        }
                    }
                };
                s.data.borrow_mut().upstream_addr = Some(addr.to_string());
                let prefix = parsed.path().trim_end_matches('/');
                let full_path = format!("{prefix}{path}");
                let mut wire_headers = headers;
                if !self.settings.preserve_host {
                    remove_header(&mut wire_headers, "host");
                    let host_header = if parsed.port().is_some() {
                        format!("{host}:{port}")
                    } else {
                        host.clone()
                    };
                    wire_headers.insert(0, ("host".into(), host_header));
                }
                let wire = WireRequest {
                    addr,
                    method,
                    path: full_path,
                    headers: wire_headers,
                    body,
                    timeout: *timeout,
                };
                let tx = self.tx.clone();
                self.io.submit(wire, move |result| {
                    let _ = tx.send(WorkerMsg::UpstreamDone {
                        stream: sid,
                        result,
                    });
                });
            }
        }
    }

    fn upstream_done(&mut self, sid: u64, result: Result<io::WireResponse, String>) {
        let chunk_size = self.settings.response_chunk_size;
        let Some(s) = self.streams.get_mut(&sid) else {
            return;
        };
        if s.stage != Stage::AwaitUpstream {
            return;
        }
        let (status, headers, body) = match result {
            Ok(r) => (r.status, r.headers, r.body),
            // Kong's answer when the upstream cannot be reached.
            Err(reason) => {
                let status = if reason == "timeout" { 504 } else { 502 };
                let msg = if status == 504 {
                    "The upstream server is timing out"
                } else {
                    "An invalid response was received from the upstream server"
                };
                (
                    status,
                    vec![(
                        "content-type".to_string(),
                        "application/json; charset=utf-8".to_string(),
                    )],
                    format!("{{\"message\":\"{msg}\"}}").into_bytes(),
                )
            }
        };
        {
            let mut d = s.data.borrow_mut();
            d.response_status = status;
            d.response_headers = headers
                .into_iter()
                .filter(|(k, _)| {
                    !k.eq_ignore_ascii_case("transfer-encoding")
                        && !k.eq_ignore_ascii_case("connection")
                })
                .collect();
        }
        s.chunks_in = match chunk_size {
            Some(size) if size > 0 && !body.is_empty() => {
                body.chunks(size).map(<[u8]>::to_vec).collect()
            }
            _ if body.is_empty() => Vec::new(),
            _ => vec![body],
        };
        s.chunks_out.clear();
        s.stage = Stage::ResponseHeaders;
        s.pos = 0;
        self.drive(sid);
    }

    /// Log and done hooks, then the reply.
    fn finish(&mut self, sid: u64, body: Vec<u8>) {
        let n = self
            .streams
            .get(&sid)
            .map_or(0, |s| self.chain_len(s.chain));
        for pos in 0..n {
            let _ = self.call_hook(sid, pos, Step::Log, "proxy_on_log", &[]);
        }
        for pos in 0..n {
            let _ = self.call_hook(sid, pos, Step::Done, "proxy_on_done", &[]);
            let _ = self.call_hook(sid, pos, Step::Done, "proxy_on_delete", &[]);
        }
        let Some(mut s) = self.remove_stream(sid) else {
            return;
        };
        s.stage = Stage::Finished;
        let d = s.data.borrow();
        let mut headers = d.response_headers.clone();
        remove_header(&mut headers, "content-length");
        headers.push(("content-length".into(), body.len().to_string()));
        let response = HttpResponse {
            status: d.response_status,
            headers,
            body,
            upstream_request: s.upstream_request.clone(),
            local_response: s.local,
            trace: s.trace.clone(),
        };
        drop(d);
        if let Some(reply) = s.reply.take() {
            let _ = reply.send(Ok(response));
        }
    }

    fn remove_stream(&mut self, sid: u64) -> Option<Stream> {
        let s = self.streams.remove(&sid)?;
        self.by_context.retain(|_, v| *v != sid);
        Some(s)
    }

    /// Fails a request as Kong does when a filter errors: 500 with Kong's JSON body.
    fn fail(&mut self, sid: u64) {
        let Some(mut s) = self.remove_stream(sid) else {
            return;
        };
        // Delete the contexts that still live in healthy instances.
        if let Some(members) = self.chains.get(&s.chain) {
            let members: Vec<(usize, u32)> = members.iter().map(|m| (m.vm, m.root)).collect();
            for (pos, (slot_idx, _)) in members.into_iter().enumerate() {
                let (Some(&ctx), Some(&generation)) = (s.contexts.get(pos), s.generations.get(pos))
                else {
                    continue;
                };
                if self.slots[slot_idx].generation != generation {
                    continue;
                }
                if let Some(vm) = self.slots[slot_idx].vm.as_mut() {
                    vm.store.data_mut().stream = None;
                    let _ = vm.call("proxy_on_delete", &[ctx as i32]);
                }
            }
        }
        let body = br#"{"message":"An unexpected error occurred"}"#.to_vec();
        let response = HttpResponse {
            status: 500,
            headers: vec![
                (
                    "content-type".into(),
                    "application/json; charset=utf-8".into(),
                ),
                ("content-length".into(), body.len().to_string()),
            ],
            body,
            upstream_request: s.upstream_request.clone(),
            local_response: false,
            trace: std::mem::take(&mut s.trace),
        };
        if let Some(reply) = s.reply.take() {
            let _ = reply.send(Ok(response));
        }
    }
}
