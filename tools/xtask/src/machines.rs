//! The QEMU machines Portcullis boots on and every system-test configuration.
//!
//! This file is the one table to edit when adding a configuration: a
//! QEMU command line is assembled as
//!
//! ```text
//! qemu-system-<arch> COMMON_ARGS <machine args> <configuration args>
//!                    <device args> -kernel <ELF> -append "<cmdline>"
//!                    -serial stdio [arguments after `--`]
//! ```
//!
//! The configuration's arguments sit between the machine and its devices
//! because QEMU wants `intel-iommu` created before the PCI devices it
//! translates.
//!
//! The `key=value` pairs on the system tests' command lines are the facts
//! measured under QEMU 10.0.2 (VT-d VER/CAP/ECAP, SMMUv3 IDR0/1/5): the kernel
//! compares what it decodes from the hardware with them.

use crate::kernel::Kernel;

/// An architecture Portcullis builds for; also the `--arch` value, whose
/// spelling is [`Arch::name`] (clap rejects any other with the choices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    /// x86_64 on QEMU's `q35` machine with Intel VT-d.
    #[value(name = "x86_64")]
    X86_64,
    /// AArch64 on QEMU's `virt` machine with an Arm SMMUv3.
    #[value(name = "aarch64")]
    Aarch64,
}

impl Arch {
    /// Every architecture, in the order tests run.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The architecture used when `--arch` is not given.
    pub const DEFAULT: Arch = Arch::Aarch64;

    /// The name used on the command line and in target triples.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The Rust target the kernel is built for.
    pub fn target(self) -> String {
        format!("{}-unknown-none", self.name())
    }

    /// The QEMU machine this architecture boots on.
    pub fn machine(self) -> &'static Machine {
        match self {
            Arch::X86_64 => &X86_64_Q35,
            Arch::Aarch64 => &AARCH64_VIRT,
        }
    }
}

/// How the guest's exit status `g` reaches QEMU's own exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestExit {
    /// x86 `isa-debug-exit`: the guest writes `g` to the port and QEMU exits
    /// with `(g << 1) | 1`, so a guest status is always odd.
    IsaDebugExit,
    /// Arm semihosting `SYS_EXIT`: QEMU exits with `g` itself.
    Semihosting,
}

impl GuestExit {
    /// QEMU's exit status when the guest exits with `guest`.
    pub fn qemu_status(self, guest: u32) -> i32 {
        // Process exit statuses are 8 bits wide; the masks say so explicitly.
        match self {
            GuestExit::IsaDebugExit => ((guest.wrapping_shl(1) | 1) & 0xff) as i32,
            GuestExit::Semihosting => (guest & 0xff) as i32,
        }
    }
}

/// Arguments every QEMU run gets, whatever the architecture.
pub const COMMON_ARGS: &[&str] = &[
    "-accel",
    "tcg",
    "-display",
    "none",
    "-no-reboot",
    "-m",
    "512M",
];

/// One QEMU machine: the emulator binary and the arguments around a
/// configuration's own.
#[derive(Debug)]
pub struct Machine {
    /// The architecture booted on this machine.
    pub arch: Arch,
    /// The QEMU executable.
    pub qemu: &'static str,
    /// Debian package that ships [`Machine::qemu`].
    pub package: &'static str,
    /// Machine and CPU, before the configuration's arguments.
    pub machine_args: &'static [&'static str],
    /// Devices after the configuration's arguments (exit device, `edu`).
    pub device_args: &'static [&'static str],
    /// The configuration's arguments for `cargo xtask run`.
    pub run_args: &'static [&'static str],
    /// How the guest's exit status is encoded in QEMU's.
    pub exit: GuestExit,
}

/// x86_64: `q35` with an Intel VT-d unit, `isa-debug-exit` and `edu`.
pub const X86_64_Q35: Machine = Machine {
    arch: Arch::X86_64,
    qemu: "qemu-system-x86_64",
    package: "qemu-system-x86",
    machine_args: &["-M", "q35", "-cpu", "qemu64"],
    device_args: &[
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-device",
        "edu",
    ],
    run_args: &["-device", "intel-iommu,x-scalable-mode=on"],
    exit: GuestExit::IsaDebugExit,
};

/// AArch64: `virt` with an SMMUv3 (nested stages), semihosting and `edu`.
pub const AARCH64_VIRT: Machine = Machine {
    arch: Arch::Aarch64,
    qemu: "qemu-system-aarch64",
    package: "qemu-system-arm",
    machine_args: &["-M", "virt,iommu=smmuv3", "-cpu", "max"],
    // RAM starts at 1 GiB on virt, above edu's default 28-bit DMA mask.
    device_args: &["-semihosting", "-device", "edu,dma_mask=0xffffffffff"],
    run_args: &[],
    exit: GuestExit::Semihosting,
};

/// Where the aarch64 boot module is placed: QEMU's virt machine loads no
/// `-initrd` for an ELF kernel, so the generic loader puts the file in RAM
/// and the command line tells the kernel where.
pub const AARCH64_MODULE_ADDRESS: u64 = 0x4800_0000;

/// QEMU arguments and a kernel command-line suffix that hand the file at
/// `path` (`size` bytes) to the kernel as its boot module: `-initrd` on
/// x86_64 (the PVH start info lists it), the generic loader plus
/// `module=ADDRESS,LENGTH` on aarch64.
pub fn module_arguments(arch: Arch, path: &str, size: u64) -> (Vec<String>, String) {
    match arch {
        Arch::X86_64 => (vec!["-initrd".into(), path.into()], String::new()),
        Arch::Aarch64 => (
            vec![
                "-device".into(),
                format!("loader,file={path},addr={AARCH64_MODULE_ADDRESS:#x},force-raw=on"),
            ],
            format!(" module={AARCH64_MODULE_ADDRESS:#x},{size}"),
        ),
    }
}

/// Seconds a system-test configuration may run unless it says otherwise.
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;

/// One QEMU system-test configuration.
#[derive(Debug)]
pub struct SystemTest {
    /// Name shown before each of its output lines; starts with the arch name.
    pub name: &'static str,
    /// Architecture (and so machine) it boots.
    pub arch: Arch,
    /// Extra QEMU arguments (IOMMU variant).
    pub qemu_args: &'static [&'static str],
    /// Kernel command line: `tests=<suite>` then `key=value` facts.
    pub cmdline: &'static str,
    /// Seconds before the guest is stopped and counted as failed.
    pub timeout_secs: u64,
    /// A user program (a workspace package of the same name) booted as the
    /// root task: the boot module (see [`module_arguments`]).
    pub program: Option<&'static str>,
    /// A system image (`images/<NAME>.toml`) packed with init and its
    /// programs and booted as the boot module instead: the kernel starts
    /// init, which builds the image's domains (`cargo xtask run --image`).
    pub image: Option<&'static str>,
    /// A seeded-bug configuration: the kernel is deliberately broken (a
    /// `seed=` word on its command line, booting the seeded kernel, see
    /// [`SystemTest::kernel`]) and these tests must FAIL. Each
    /// that fails counts as a pass (the bug was caught), each that passes
    /// as a failure; the configuration's other tests are not counted.
    pub must_fail: &'static [&'static str],
    /// The kernel is expected to die of an unexpected exception: the run
    /// passes (one test) when it reports the exception with its vector,
    /// faulting address and registers and exits with status 3.
    pub expect_trap: bool,
    /// Boot the capability-dump kernel (`--profile cap-dump --features
    /// cap-dump`, see `kernel.rs`) with the configuration's image: one more
    /// test, `cap_dump_matches_image`, passes when the kernel's dump of the
    /// live derivation tree parses, Graphviz draws it and it matches the
    /// image (`sysimage::live::check_against`); no dump fails it.
    pub cap_dump: bool,
}

impl SystemTest {
    /// The seeded bugs the command line plants (`seed=NAME,...`), if any.
    pub fn seeds(&self) -> Option<&'static str> {
        self.cmdline
            .split(' ')
            .find_map(|word| word.strip_prefix("seed="))
    }

    /// The kernel this configuration boots: the seeded kernel when its
    /// command line plants a seeded bug (the release kernel has none), the
    /// capability-dump kernel for `cap_dump`, the fuzz kernel (with the
    /// abstraction check) for the fuzz program, else the release kernel.
    pub fn kernel(&self) -> Kernel {
        if self.seeds().is_some() {
            Kernel::Seeded
        } else if self.program == Some(crate::fuzz::PROGRAM) {
            Kernel::Fuzz
        } else if self.cap_dump {
            Kernel::CapDump
        } else {
            Kernel::Release
        }
    }
}

/// Every system-test configuration, run by `cargo xtask test`.
pub const SYSTEM_TESTS: &[SystemTest] = &[
    SystemTest {
        name: "x86_64-kernel-trap",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu"],
        cmdline: "tests=trap",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: None,
        must_fail: &[],
        expect_trap: true,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-kernel-trap",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=trap",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: None,
        must_fail: &[],
        expect_trap: true,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-root-task",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        cmdline: "tests=root-task",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("hello"),
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-user-syscalls",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        // The program prints its own test lines; the kernel only runs it.
        cmdline: "tests=user",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("syscalls"),
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-user-syscalls",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=user",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("syscalls"),
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-user-cspace",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        cmdline: "tests=user",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("cspace"),
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-user-cspace",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=user",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("cspace"),
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        // Capability changes leave cached lookups valid: a deleted copy
        // keeps working for another thread's message-passing calls.
        name: "x86_64-seeded-stale-lookup-cache",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        cmdline: "tests=user seed=stale-lookup-cache",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("threads"),
        image: None,
        must_fail: &["a_deleted_capability_stops_working_at_once"],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-seeded-stale-lookup-cache",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=user seed=stale-lookup-cache",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("threads"),
        image: None,
        must_fail: &["a_deleted_capability_stops_working_at_once"],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        // The fuzzer with CI's count and seed (`fuzz::CI_CALLS`,
        // `fuzz::CI_SEED`); `cargo xtask fuzz` boots the same row with others.
        name: "x86_64-user-fuzz",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        cmdline: "tests=user",
        timeout_secs: crate::fuzz::timeout_secs(crate::fuzz::CI_CALLS),
        program: Some("fuzz"),
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-user-fuzz",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=user",
        timeout_secs: crate::fuzz::timeout_secs(crate::fuzz::CI_CALLS),
        program: Some("fuzz"),
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        // CPU leaves outlive their unmapping: the fuzzer's abstraction
        // check finds a leaf no Frame capability maps.
        name: "x86_64-seeded-leak-cpu-leaf",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        cmdline: "tests=user seed=leak-cpu-leaf",
        timeout_secs: crate::fuzz::timeout_secs(crate::fuzz::CI_CALLS),
        program: Some("fuzz"),
        image: None,
        must_fail: &["syscall_fuzzer"],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-seeded-leak-cpu-leaf",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=user seed=leak-cpu-leaf",
        timeout_secs: crate::fuzz::timeout_secs(crate::fuzz::CI_CALLS),
        program: Some("fuzz"),
        image: None,
        must_fail: &["syscall_fuzzer"],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-user-threads",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        cmdline: "tests=user",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("threads"),
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-user-threads",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=user",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("threads"),
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-user-iocaps",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        cmdline: "tests=user",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("iocaps"),
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-user-iocaps",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=user",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("iocaps"),
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-user-edu",
        arch: Arch::X86_64,
        qemu_args: &[
            "-device",
            "intel-iommu,x-scalable-mode=on",
            "-device",
            "edu",
        ],
        cmdline: "tests=user",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("edu"),
        must_fail: &[],
        expect_trap: false,
        image: None,
        cap_dump: false,
    },
    SystemTest {
        // VT-d with PASIDs (PSS=0: PASIDs 0 and 1): adds the RID_PASID test.
        name: "x86_64-user-edu-pasid",
        arch: Arch::X86_64,
        qemu_args: &[
            "-device",
            "intel-iommu,x-scalable-mode=on,x-pasid-mode=on",
            "-device",
            "edu",
        ],
        cmdline: "tests=user",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("edu"),
        must_fail: &[],
        expect_trap: false,
        image: None,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-user-edu",
        arch: Arch::Aarch64,
        qemu_args: &["-device", "edu,dma_mask=0xffffffffff"],
        cmdline: "tests=user",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("edu"),
        must_fail: &[],
        expect_trap: false,
        image: None,
        cap_dump: false,
    },
    SystemTest {
        // Interrupt remapping left off: the first edu, programmed with the
        // second edu's MSI message, raises the second edu's line.
        name: "x86_64-seeded-no-intremap",
        arch: Arch::X86_64,
        qemu_args: &[
            "-device",
            "intel-iommu,x-scalable-mode=on",
            "-device",
            "edu",
        ],
        cmdline: "tests=user seed=no-intremap",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("edu"),
        must_fail: &["msi_cannot_be_forged_by_another_device"],
        expect_trap: false,
        image: None,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-seeded-io-skip-invalidation",
        arch: Arch::X86_64,
        qemu_args: &[
            "-device",
            "intel-iommu,x-scalable-mode=on",
            "-device",
            "edu",
        ],
        cmdline: "tests=user seed=io-skip-invalidation",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("edu"),
        must_fail: &["nothing_lands_after_unmap_returns"],
        expect_trap: false,
        image: None,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-seeded-io-stage2-identity",
        arch: Arch::X86_64,
        qemu_args: &[
            "-device",
            "intel-iommu,x-scalable-mode=on",
            "-device",
            "edu",
        ],
        cmdline: "tests=user seed=io-stage2-identity",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("edu"),
        must_fail: &["malicious_stage1_is_blocked"],
        expect_trap: false,
        image: None,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-seeded-io-device-survives-delete",
        arch: Arch::X86_64,
        qemu_args: &[
            "-device",
            "intel-iommu,x-scalable-mode=on",
            "-device",
            "edu",
        ],
        cmdline: "tests=user seed=io-device-survives-delete",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("edu"),
        must_fail: &["deleting_the_device_blocks_it"],
        expect_trap: false,
        image: None,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-seeded-io-skip-invalidation",
        arch: Arch::Aarch64,
        qemu_args: &["-device", "edu,dma_mask=0xffffffffff"],
        cmdline: "tests=user seed=io-skip-invalidation",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("edu"),
        must_fail: &["nothing_lands_after_unmap_returns"],
        expect_trap: false,
        image: None,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-seeded-io-stage2-identity",
        arch: Arch::Aarch64,
        qemu_args: &["-device", "edu,dma_mask=0xffffffffff"],
        cmdline: "tests=user seed=io-stage2-identity",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("edu"),
        must_fail: &["malicious_stage1_is_blocked"],
        expect_trap: false,
        image: None,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-seeded-io-device-survives-delete",
        arch: Arch::Aarch64,
        qemu_args: &["-device", "edu,dma_mask=0xffffffffff"],
        cmdline: "tests=user seed=io-device-survives-delete",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("edu"),
        must_fail: &["deleting_the_device_blocks_it"],
        expect_trap: false,
        image: None,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-user-irq",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        cmdline: "tests=user",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("irq"),
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-user-irq",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=user",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("irq"),
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-user-devmem",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        cmdline: "tests=user",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        // edu is among every machine's devices (`device_args`).
        program: Some("devmem"),
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-user-devmem",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=user",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        // edu is among every machine's devices (`device_args`).
        program: Some("devmem"),
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-user-vspaces",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        cmdline: "tests=user",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("vspaces"),
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-user-vspaces",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=user",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("vspaces"),
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-user-hardening",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        cmdline: "tests=user",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("hardening"),
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-user-hardening",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=user",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("hardening"),
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-image-default",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        // The edu driver domain prints the story and the test lines.
        cmdline: "tests=image",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: Some("default"),
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-image-default",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=image",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: Some("default"),
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-image-pingpong",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        // A domain of the image (the client) prints the test lines.
        cmdline: "tests=image",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: Some("pingpong"),
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-image-pingpong",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=image",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: Some("pingpong"),
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-image-dma-grant",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        cmdline: "tests=image",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: Some("dma-grant"),
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-image-dma-grant",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=image",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: Some("dma-grant"),
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-image-redteam",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        // The attacker domain prints one test line per attack, then the
        // honest domain's check.
        cmdline: "tests=image",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: Some("redteam"),
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-image-redteam",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=image",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: Some("redteam"),
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-image-default-capdump",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        cmdline: "tests=image",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: Some("default"),
        must_fail: &[],
        expect_trap: false,
        cap_dump: true,
    },
    SystemTest {
        name: "x86_64-image-pingpong-capdump",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        cmdline: "tests=image",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: Some("pingpong"),
        must_fail: &[],
        expect_trap: false,
        cap_dump: true,
    },
    SystemTest {
        name: "aarch64-image-default-capdump",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=image",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: Some("default"),
        must_fail: &[],
        expect_trap: false,
        cap_dump: true,
    },
    SystemTest {
        name: "aarch64-image-pingpong-capdump",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=image",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: Some("pingpong"),
        must_fail: &[],
        expect_trap: false,
        cap_dump: true,
    },
    SystemTest {
        name: "x86_64-image-dma-grant-capdump",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        // The DMA checks: device, IoSpace, io_map pages, fault queue.
        cmdline: "tests=image",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: Some("dma-grant"),
        must_fail: &[],
        expect_trap: false,
        cap_dump: true,
    },
    SystemTest {
        name: "aarch64-image-dma-grant-capdump",
        arch: Arch::Aarch64,
        qemu_args: &[],
        // The DMA checks: device, IoSpace, io_map pages, fault queue.
        cmdline: "tests=image",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: Some("dma-grant"),
        must_fail: &[],
        expect_trap: false,
        cap_dump: true,
    },
    SystemTest {
        name: "x86_64-image-ticks",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        cmdline: "tests=image",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: Some("ticks"),
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-root-task",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=root-task",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("hello"),
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-vtd-legacy",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu"],
        cmdline: "tests=boot vtd.ver=0x10 vtd.cap=0x00d2008c222f0606 vtd.ecap=0x0000000000f00f4a",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-vtd-scalable",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        // QEMU.md fixes only ECAP.SMTS/SLTS (and SRS) for this variant.
        cmdline: "tests=boot vtd.ver=0x10 vtd.cap=0x00d2008c222f0606 vtd.ecap.smts=1 vtd.ecap.slts=1",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-vtd-flts",
        arch: Arch::X86_64,
        qemu_args: &[
            "-device",
            "intel-iommu,x-scalable-mode=on,x-flts=on,x-pasid-mode=on",
        ],
        // CAP differs here (FL1GP=1) and is not fixed in QEMU.md: not checked.
        cmdline: "tests=boot vtd.ver=0x10 vtd.ecap=0x0000890000f00f4a",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-xcheck-legacy",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu"],
        cmdline: "tests=xcheck",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-xcheck-scalable",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        cmdline: "tests=xcheck",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-xcheck-pasid",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on,x-pasid-mode=on"],
        cmdline: "tests=xcheck",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-xcheck-flts",
        arch: Arch::X86_64,
        qemu_args: &[
            "-device",
            "intel-iommu,x-scalable-mode=on,x-flts=on,x-pasid-mode=on",
        ],
        cmdline: "tests=xcheck",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-xcheck",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=xcheck",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-seeded-dangling-references",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        cmdline: "tests=user seed=dangling-references",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("hardening"),
        image: None,
        must_fail: &[
            "deleted_fault_endpoint_is_never_written",
            "deleted_irq_notification_is_never_signalled",
            "reply_to_a_dead_caller_writes_nothing",
        ],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-seeded-dangling-references",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=user seed=dangling-references",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("hardening"),
        image: None,
        must_fail: &[
            "deleted_fault_endpoint_is_never_written",
            "deleted_irq_notification_is_never_signalled",
            "reply_to_a_dead_caller_writes_nothing",
        ],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-seeded-dangling-references-edu",
        arch: Arch::X86_64,
        qemu_args: &[
            "-device",
            "intel-iommu,x-scalable-mode=on",
            "-device",
            "edu",
        ],
        cmdline: "tests=user seed=dangling-references",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: Some("edu"),
        image: None,
        must_fail: &["deleted_notification_is_never_signalled"],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-seeded-iommu-off",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu"],
        cmdline: "tests=boot seed=iommu-off vtd.ver=0x10",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: None,
        must_fail: &["dma_blocked_by_default"],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-seeded-iommu-off",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=boot seed=iommu-off smmu.idr0=0x0d44101b",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: None,
        must_fail: &["dma_blocked_by_default"],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-seeded-no-preemption",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        cmdline: "tests=user seed=no-preemption",
        timeout_secs: 20,
        program: Some("threads"),
        image: None,
        must_fail: &["spinning_thread_is_preempted"],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "x86_64-seeded-irq-stays-bound",
        arch: Arch::X86_64,
        qemu_args: &["-device", "intel-iommu,x-scalable-mode=on"],
        cmdline: "tests=user seed=irq-stays-bound",
        timeout_secs: 20,
        program: Some("irq"),
        image: None,
        must_fail: &["deleting_the_handler_frees_the_line"],
        expect_trap: false,
        cap_dump: false,
    },
    SystemTest {
        name: "aarch64-smmuv3",
        arch: Arch::Aarch64,
        qemu_args: &[],
        cmdline: "tests=boot smmu.idr0=0x0d44101b smmu.idr1=0x02730010 smmu.idr5=0x74",
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        program: None,
        image: None,
        must_fail: &[],
        expect_trap: false,
        cap_dump: false,
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn arch_names_round_trip() {
        use clap::ValueEnum;
        assert_eq!(Arch::value_variants(), Arch::ALL);
        for arch in Arch::ALL {
            assert_eq!(Arch::from_str(arch.name(), false), Ok(arch));
            assert_eq!(arch.machine().arch, arch);
        }
        assert_eq!(Arch::X86_64.target(), "x86_64-unknown-none");
    }

    #[test]
    fn unknown_arch_names_the_choices() {
        use clap::ValueEnum;
        let error = Arch::from_str("riscv64", false).unwrap_err();
        assert!(error.contains("riscv64"), "{error}");
        let choices: Vec<_> = Arch::value_variants()
            .iter()
            .filter_map(|arch| arch.to_possible_value())
            .map(|value| value.get_name().to_string())
            .collect();
        assert_eq!(choices, ["x86_64", "aarch64"]);
    }

    #[test]
    fn guest_exit_encodings() {
        assert_eq!(GuestExit::IsaDebugExit.qemu_status(0), 1);
        assert_eq!(GuestExit::IsaDebugExit.qemu_status(1), 3);
        assert_eq!(GuestExit::IsaDebugExit.qemu_status(4), 9);
        assert_eq!(GuestExit::Semihosting.qemu_status(0), 0);
        assert_eq!(GuestExit::Semihosting.qemu_status(3), 3);
    }

    #[test]
    fn system_test_table_is_consistent() {
        let mut names = HashSet::new();
        for config in SYSTEM_TESTS {
            assert!(
                names.insert(config.name),
                "duplicate configuration {}",
                config.name
            );
            assert!(
                config.name.starts_with(&format!("{}-", config.arch.name())),
                "{} must start with its arch",
                config.name
            );
            assert!(config.timeout_secs > 0);
            let mut words = config.cmdline.split(' ');
            let first = words.next().unwrap_or_default();
            assert!(
                first.starts_with("tests=") && first.len() > 6,
                "{}: {first}",
                config.name
            );
            for word in words {
                let (key, value) = word.split_once('=').unwrap_or_default();
                assert!(
                    !key.is_empty() && !value.is_empty(),
                    "{}: `{word}`",
                    config.name
                );
            }
            assert!(
                config.program.is_none() || config.image.is_none(),
                "{}: a program or an image, not both",
                config.name
            );
            assert!(
                !config.cap_dump || config.image.is_some(),
                "{}: a capability dump is checked against an image",
                config.name
            );
            // Only a seeded kernel can fail its tests on purpose, and a
            // seeded kernel is only booted to see them fail.
            assert_eq!(
                config.seeds().is_some(),
                !config.must_fail.is_empty(),
                "{}: `seed=` on the command line goes with `must_fail`",
                config.name
            );
            assert!(
                config.seeds().is_none() || !config.cap_dump,
                "{}: the seeded kernel has no capability dump",
                config.name
            );
            // Arguments come in `-option value` pairs.
            assert_eq!(config.qemu_args.len() % 2, 0, "{}", config.name);
        }
        for arch in Arch::ALL {
            assert!(
                SYSTEM_TESTS.iter().any(|config| config.arch == arch),
                "no test for {arch:?}"
            );
        }
    }

    #[test]
    fn vtd_configurations_carry_an_intel_iommu_and_the_measured_facts() {
        for config in SYSTEM_TESTS
            .iter()
            .filter(|config| config.arch == Arch::X86_64)
        {
            assert_eq!(config.qemu_args[0], "-device");
            assert!(
                config.qemu_args[1].starts_with("intel-iommu"),
                "{}",
                config.name
            );
            // The boot suite checks the decoded registers; other suites
            // (the cross-check) need no facts.
            if config.cmdline.starts_with("tests=boot") {
                assert!(config.cmdline.contains("vtd.ver=0x10"), "{}", config.name);
            }
        }
        // The QEMU 10.0.2 values measured in the project's notes.
        let legacy = SYSTEM_TESTS
            .iter()
            .find(|config| config.name == "x86_64-vtd-legacy")
            .unwrap();
        assert!(legacy.cmdline.contains("vtd.cap=0x00d2008c222f0606"));
        assert!(legacy.cmdline.contains("vtd.ecap=0x0000000000f00f4a"));
        let smmu = SYSTEM_TESTS
            .iter()
            .find(|config| config.name == "aarch64-smmuv3")
            .unwrap();
        assert!(smmu.cmdline.contains("smmu.idr0=0x0d44101b"));
        assert!(smmu.cmdline.contains("smmu.idr1=0x02730010"));
        assert!(smmu.cmdline.contains("smmu.idr5=0x74"));
    }
}
