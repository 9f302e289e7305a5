//! What the layer needs from whoever runs it (the kernel, or a host test):
//! a notification type for fault queues, a line of log output, and the
//! test kernels' deliberate flaws. The layer never calls anything else
//! above it; the kernel signals the notifications it is handed back.

/// The caller's side of the layer.
pub trait Env {
    /// What a fault queue signals (the kernel: a Notification capability's
    /// target). The layer stores it and hands it back; it never signals.
    type Notify: Copy;
    /// Whether two notifications name the same object (one signal each
    /// per drain).
    fn same_notification(a: &Self::Notify, b: &Self::Notify) -> bool;
    /// Reports one event the layer cannot return (a table page leaked, an
    /// effect that could not be applied), as one console line (`ktext`:
    /// no `core::fmt` in the kernel).
    fn log(line: &dyn ktext::Text);
    /// Whether `flaw` is planted (the kernel's seeded bugs; always `false`
    /// outside a test kernel, so the branches compile away).
    fn broken(flaw: Flaw) -> bool {
        let _ = flaw;
        false
    }
    /// RAM the [`Flaw::Stage2Identity`] flaw maps into every new stage 2
    /// (2 MiB from here, identity).
    const FOREIGN_IPA: u64 = 0;
    /// How long a page request may wait for its driver's answer, in the
    /// units of the `now` the caller passes (`State::deliver`,
    /// `State::expire_requests`); then the layer answers `Failure`.
    const RESPONSE_DEADLINE: u64;
}

/// The deliberate flaws a test kernel can plant in this layer, each caught
/// by a system test (kernel/README.md, "Seeded bugs").
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// Invalidations are queued and waited for by nobody.
    SkipInvalidation,
    /// Every new stage 2 maps 2 MiB of RAM at [`Env::FOREIGN_IPA`].
    Stage2Identity,
    /// A detach leaves the device entry in place.
    DeviceSurvivesDelete,
    /// A fault queue keeps a dead notification.
    DanglingReferences,
    /// A CPU unmap in a VSpace a device is bound to (SVA) leaves the
    /// device's IOTLB alone.
    SkipSvaInvalidation,
    /// The MSI doorbell is recorded but never mapped into the stage 2.
    NoMsiDoorbell,
    /// `IoSpace.ReadDirty` with clear returns without invalidating the
    /// IoSpace's tag: a translation cached as dirty lets a later write
    /// through without setting D again.
    SkipDirtyFlush,
}
