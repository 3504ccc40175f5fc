//! The loop's one extension point: an application living inside the runtime's thread (the
//! embedded node, [`crate::embed`]) sees the node's TCP events, the waker's wakeups and
//! the moments the node is replaced or the control state moves, and acts on the node
//! right there. The runtime keeps no state for it; whatever the hook does to the node is
//! drained like any other input (the sans-IO contract).

use std::sync::Arc;

use mesh_core::control::client::NetmapState;
use mesh_core::node::Node;
use mesh_core::tcp::TcpEvent;
use mesh_core::time::Instant;
use mio::Waker;

use super::control::LinkState;
use super::Runtime;

/// What a hook may look at and act on during one call.
#[derive(Debug)]
pub struct HookContext<'a> {
    pub node: &'a mut Node,
    pub now: Instant,
    /// The latest netmap from the control server (daemon mode), for identities.
    pub netmap: Option<&'a NetmapState>,
    /// The control connection's state and last error (daemon mode, after `up`).
    pub control: Option<(LinkState, Option<&'a str>)>,
}

/// Code that runs on the loop's thread, called back by the loop.
pub trait LoopHook: Send {
    /// The runtime's waker fired: another thread may have left work for the hook.
    fn woken(&mut self, cx: &mut HookContext<'_>);
    /// A TCP event of the node (connections the core terminates for the application).
    fn tcp_event(&mut self, cx: &mut HookContext<'_>, event: TcpEvent);
    /// The node was rebuilt (daemon mode: its addresses arrived or changed). Every
    /// connection and listener of the old node is gone, without events.
    fn node_replaced(&mut self, cx: &mut HookContext<'_>);
    /// The control connection's state or the netmap may have changed.
    fn control_changed(&mut self, cx: &mut HookContext<'_>);
}

impl Runtime {
    /// Install the hook (one per runtime; a second replaces the first).
    pub fn set_hook(&mut self, hook: Box<dyn LoopHook>) {
        self.hook = Some(hook);
    }

    /// The waker of the loop, for threads that leave work for a hook.
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// Call the hook (if any) with the context, then move what the node produced.
    pub(super) fn with_hook(&mut self, f: impl FnOnce(&mut dyn LoopHook, &mut HookContext<'_>)) {
        let Self { hook, node, daemon, clock, .. } = self;
        let Some(hook) = hook else { return };
        let link = daemon.as_ref().and_then(|d| d.control_link());
        let mut cx = HookContext {
            node,
            now: clock.now(),
            netmap: link.and_then(|l| l.client.netmap()),
            control: link.map(|l| (l.state, l.last_error.as_deref())),
        };
        f(hook.as_mut(), &mut cx);
    }

    pub(super) fn has_hook(&self) -> bool {
        self.hook.is_some()
    }
}
