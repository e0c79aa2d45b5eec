"""Every Xen and x86 ABI number the boot shim uses, each with the header it comes from.

The assembly templates take these values when they are rendered; no hypercall
number, MSR, control-register bit or struct offset is typed into a template. Struct
layouts are declared with the layout engine (offsets computed, never typed), and
tests compile Xen's public headers (Debian libxen-dev) with gcc to compare.
"""

from __future__ import annotations

import enum

from .clayout import U8, U16, U32, U64, CharArray, Field, Record

# --- hypercall numbers: xen/include/public/xen.h -----------------------------------


class Hypercall(enum.IntEnum):
    """__HYPERVISOR_* numbers (the slot in the hypercall page); the lower-case member
    name is the name in xen.h."""

    SET_TRAP_TABLE = 0
    MMU_UPDATE = 1
    SET_GDT = 2
    STACK_SWITCH = 3
    SET_CALLBACKS = 4
    FPU_TASKSWITCH = 5
    SCHED_OP_COMPAT = 6
    PLATFORM_OP = 7
    SET_DEBUGREG = 8
    GET_DEBUGREG = 9
    UPDATE_DESCRIPTOR = 10
    MEMORY_OP = 12
    MULTICALL = 13
    UPDATE_VA_MAPPING = 14
    SET_TIMER_OP = 15
    EVENT_CHANNEL_OP_COMPAT = 16
    XEN_VERSION = 17
    CONSOLE_IO = 18
    PHYSDEV_OP_COMPAT = 19
    GRANT_TABLE_OP = 20
    VM_ASSIST = 21
    UPDATE_VA_MAPPING_OTHERDOMAIN = 22
    IRET = 23
    VCPU_OP = 24
    SET_SEGMENT_BASE = 25
    MMUEXT_OP = 26
    XSM_OP = 27
    NMI_OP = 28
    SCHED_OP = 29
    CALLBACK_OP = 30
    XENOPROF_OP = 31
    EVENT_CHANNEL_OP = 32
    PHYSDEV_OP = 33
    HVM_OP = 34
    SYSCTL = 35
    DOMCTL = 36
    KEXEC_OP = 37
    TMEM_OP = 38
    ARGO_OP = 39
    XENPMU_OP = 40
    DM_OP = 41
    HYPFS_OP = 42
    ARCH_0 = 48  # x86: mca (xen/include/public/arch-x86/xen-mca.h)


# Which hypercalls a 64-bit HVM/PVH guest may make: the "hvm64" column of Xen's
# hypercall table (xen/include/hypercall-defs.c, Xen 4.17). The rest exist only for
# PV guests: under PVH Xen answers them -ENOSYS.
PV_ONLY_HYPERCALLS = frozenset(
    {
        Hypercall.SET_TRAP_TABLE,
        Hypercall.MMU_UPDATE,
        Hypercall.SET_GDT,
        Hypercall.STACK_SWITCH,
        Hypercall.SET_CALLBACKS,
        Hypercall.FPU_TASKSWITCH,
        Hypercall.SCHED_OP_COMPAT,
        Hypercall.SET_DEBUGREG,
        Hypercall.GET_DEBUGREG,
        Hypercall.UPDATE_DESCRIPTOR,
        Hypercall.UPDATE_VA_MAPPING,
        Hypercall.EVENT_CHANNEL_OP_COMPAT,
        Hypercall.PHYSDEV_OP_COMPAT,
        Hypercall.UPDATE_VA_MAPPING_OTHERDOMAIN,
        Hypercall.IRET,
        Hypercall.SET_SEGMENT_BASE,
        Hypercall.NMI_OP,
        Hypercall.CALLBACK_OP,
        Hypercall.XENOPROF_OP,
        Hypercall.KEXEC_OP,
        Hypercall.TMEM_OP,
        Hypercall.ARCH_0,
    }
)
# Hypercalls an HVM/PVH guest may make, but with fewer sub-operations than PV has
# (xen/arch/x86/hvm/hypercall.c and the PV-only cases of xen/arch/x86/mm.c): a PV
# kernel's use of them may still fail under PVH.
PVH_RESTRICTED_HYPERCALLS = {
    Hypercall.MMUEXT_OP: "its page-table operations (pin, unpin, new base pointers) are PV only",
    Hypercall.GRANT_TABLE_OP: "setup_table's frames are not in an HVM/PVH guest's memory map",
    Hypercall.PHYSDEV_OP: "set_iopl and other PV sub-operations are refused under HVM/PVH",
    # arch_vm_assist_valid_mask in xen/arch/x86/include/asm/domain.h: HVM_VM_ASSIST_MASK
    Hypercall.VM_ASSIST: "an HVM/PVH guest may ask only runstate_update_flag",
}


HYPERCALL_STUB_SIZE = 32  # each hypercall has a 32-byte stub in the page (xen.h)
PAGE_SHIFT = 12  # x86 4 KiB pages
PAGE_SIZE = 1 << PAGE_SHIFT

DOMID_SELF = 0x7FF0  # xen.h
CONSOLEIO_WRITE = 0  # xen.h, CONSOLEIO_write
SCHEDOP_SHUTDOWN = 2  # sched.h
EVTCHNOP_SEND = 4  # event_channel.h: struct evtchn_send { evtchn_port_t port; }
SHUTDOWN_CRASH = 3  # sched.h

# --- guest types (XENVER_capabilities, xen/include/public/version.h) ------------------
# The strings a hypervisor lists and libxenguest's xc_dom_guest_type names a kernel
# with; the domain builder refuses a guest type the list lacks (xc_dom_compat_check).

GUEST_PV64 = "xen-3.0-x86_64"
GUEST_PV32_PAE = "xen-3.0-x86_32p"
GUEST_PV32 = "xen-3.0-x86_32"
GUEST_HVM32 = "hvm-3.0-x86_32"  # every PVH kernel: it starts in 32-bit protected mode
# Debian 12's Xen 4.17 (64-bit, built without 32-bit PV): what `xl info` lists as
# xen_caps there.
DEBIAN_XEN_CAPS = ("xen-3.0-x86_64", "hvm-3.0-x86_32", "hvm-3.0-x86_32p", "hvm-3.0-x86_64")


class ShutdownReason(enum.IntEnum):
    """SHUTDOWN_* codes of SCHEDOP_shutdown (sched.h); xl prints them as "reason code"."""

    POWEROFF = 0
    REBOOT = 1
    SUSPEND = 2
    CRASH = 3
    WATCHDOG = 4
    SOFT_RESET = 5


# --- memory_op: xen/include/public/memory.h ----------------------------------------

XENMEM_CURRENT_RESERVATION = 3  # arg: domid_t *; returns the domain's pages
XENMEM_ADD_TO_PHYSMAP = 7
XENMEM_MEMORY_MAP = 9
XENMAPSPACE_SHARED_INFO = 0

XEN_ADD_TO_PHYSMAP = Record(
    "xen_add_to_physmap",
    (
        Field("domid", U16, "DOMID_SELF"),
        Field("size", U16, "pages, gmfn_range only"),
        Field("space", U32, "XENMAPSPACE_*"),
        Field("idx", U64, "index into the space"),
        Field("gpfn", U64, "guest frame where the page appears"),
    ),
    doc="XENMEM_add_to_physmap argument (memory.h)",
)

XENMAPSPACE_GRANT_TABLE = 1

# --- grant_table_op: xen/include/public/grant_table.h ------------------------------

GNTTABOP_SETUP_TABLE = 2
GNTST_OKAY = 0
GNTST_GENERAL_ERROR = -1
# Xen's default bound on a domU's grant-table frames (xl.cfg max_grant_frames, 64 in
# Xen 4.17's xen/common/grant_table.c opt_max_grant_frames)
MAX_GRANT_FRAMES = 64
GNTTAB_SETUP_TABLE = Record(
    "gnttab_setup_table",
    (
        Field("dom", U16, "domid_t: DOMID_SELF"),
        Field("nr_frames", U32, "frames asked for"),
        Field("status", U16, "out: GNTST_* (an int16_t)"),
        Field("frame_list", U64, "guest handle of a xen_pfn_t array, out"),
    ),
    doc="GNTTABOP_setup_table's argument (grant_table.h)",
)

XEN_MEMORY_MAP = Record(
    "xen_memory_map",
    (
        Field("nr_entries", U32, "in: capacity of buffer; out: entries written"),
        Field("buffer", U64, "guest handle of an e820 entry array"),
    ),
    doc="XENMEM_memory_map argument (memory.h)",
)

# XENMEM_memory_map fills BIOS INT 15h E820 entries: Xen's struct e820entry is
# packed (asm-x86/e820.h), so entries are 20 bytes apart, not 24.
E820_ENTRY = Record(
    "e820entry",
    (
        Field("addr", U64, "base address"),
        Field("size", U64, "length in bytes"),
        Field("type", U32, "E820 type"),
    ),
    doc="one entry of the XENMEM_memory_map buffer (packed)",
)
E820_ENTRY_STRIDE = E820_ENTRY.offset_of("type") + 4  # packed: no tail padding

# --- hvm_op: xen/include/public/hvm/hvm_op.h, hvm/params.h -------------------------

HVMOP_SET_PARAM = 0
HVMOP_GET_PARAM = 1
# HVM_PARAM_CALLBACK_IRQ's value: its type in bits 56-63; the vector type delivers
# event upcalls as that vector while evtchn_upcall_pending is set (hvm/params.h)
HVM_PARAM_CALLBACK_TYPE_SHIFT = 56
HVM_PARAM_CALLBACK_TYPE_VECTOR = 2
SCHEDOP_BLOCK = 1  # sched.h
# physdev.h: PHYSDEVOP_set_iopl's argument, struct physdev_set_iopl { uint32_t iopl; }:
# the I/O privilege a PV guest's kernel (and, at 3, its user mode) gets for port I/O
PHYSDEVOP_SET_IOPL = 6
PHYSDEV_SET_IOPL_SIZE = 4
IOPL_MAX = 3  # Xen's do_physdev_op refuses more (-EINVAL)

XEN_HVM_PARAM = Record(
    "xen_hvm_param",
    (
        Field("domid", U16, "DOMID_SELF"),
        Field("pad", U16),
        Field("index", U32, "HVM_PARAM_*"),
        Field("value", U64, "out"),
    ),
    doc="HVMOP_get_param argument (hvm/hvm_op.h)",
)


class HvmParam(enum.IntEnum):
    CALLBACK_IRQ = 0
    STORE_PFN = 1
    STORE_EVTCHN = 2
    CONSOLE_PFN = 17
    CONSOLE_EVTCHN = 18


# --- Xen's cpuid leaves (xen/include/public/arch-x86/cpuid.h) ------------------------

XEN_CPUID_FIRST_LEAF = 0x40000000
XEN_CPUID_LEAF_STRIDE = 0x100  # Xen may sit at base + 0x100*i (viridian first)
XEN_CPUID_LAST_LEAF = 0x40010000  # exclusive end of the search
XEN_CPUID_SIGNATURE = b"XenVMMXenVMM"  # ebx, ecx, edx of the base leaf
XEN_CPUID_HYPERCALL_LEAF = 2  # base + 2: ebx = MSR that installs the hypercall page


def signature_words(signature: bytes = XEN_CPUID_SIGNATURE) -> tuple[int, int, int]:
    """(ebx, ecx, edx) as cpuid returns the 12-byte signature."""
    return tuple(int.from_bytes(signature[i : i + 4], "little") for i in (0, 4, 8))  # type: ignore[return-value]


# --- x86 architecture (Intel SDM vol. 3, AMD APM vol. 2) -----------------------------

CR0_PE = 1 << 0
CR0_MP = 1 << 1  # monitor coprocessor: wait/fwait honour TS
CR0_EM = 1 << 2  # x87 emulation: when set, x87 and SSE instructions raise #NM/#UD
CR0_TS = 1 << 3  # task switched: the next FPU/SSE instruction raises #NM
CR0_WP = 1 << 16  # write protect: CPL 0 writes honour read-only pages (Xen runs PV so)
CR0_PG = 1 << 31
CR4_PAE = 1 << 5
CR4_OSFXSR = 1 << 9  # fxsave/fxrstor and SSE instructions enabled
CR4_OSXMMEXCPT = 1 << 10  # unmasked SIMD floating-point exceptions raise #XM
MSR_EFER = 0xC0000080
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_SCE = 1 << 0  # syscall/sysret enabled
EFER_NXE = 1 << 11  # the no-execute bit (63) of page-table entries enabled
# cpuid leaf 0x80000001 (SDM vol. 2, CPUID): EDX's syscall, NX (Intel's XD) and long
# mode bits. Xen runs a 64-bit PV guest with EFER.NXE set when the CPU has NX, so a
# PV kernel may set bit 63 in its page-table entries.
CPUID_EXT_FEATURES = 0x80000001
CPUID_EXT_EDX_SYSCALL = 1 << 11
CPUID_EXT_EDX_NX = 1 << 20
CPUID_EXT_EDX_LM = 1 << 29
MSR_STAR = 0xC0000081  # bits 32-47: the CS syscall loads (SS = that + 8)
MSR_LSTAR = 0xC0000082  # where a 64-bit syscall goes
MSR_SFMASK = 0xC0000084  # the rflags bits a syscall clears

PTE_PRESENT = 1 << 0
PTE_WRITE = 1 << 1
PTE_LARGE = 1 << 7  # PS bit in a PDE: 2 MiB page
PTE_ADDR_MASK = 0x000F_FFFF_FFFF_F000
LARGE_PAGE_SIZE = 1 << 21
ENTRIES_PER_TABLE = 1 << 9

# GDT descriptors for a flat long-mode code segment and a flat data segment (the
# shim's GDT, asm_templates/90_data.S), and the flat 32-bit code segment a PVH loader
# enters with (Xen's docs/misc/pvh.pandoc: CS a flat 32-bit read/execute segment).
GDT_CODE64 = 0x00AF9A000000FFFF  # L=1, P, DPL0, code exec/read
GDT_DATA = 0x00CF92000000FFFF  # G, D/B, P, DPL0, data read/write
GDT_CODE32 = 0x00CF9A000000FFFF  # G, D/B, P, DPL0, code exec/read
GDT_DESCRIPTOR_SIZE = 8
GDT_SELECTOR_CODE64 = 1 * GDT_DESCRIPTOR_SIZE
GDT_SELECTOR_DATA = 2 * GDT_DESCRIPTOR_SIZE

# --- ports and the shim's boot modes (README.md, samples/README.md) --------------------

DEBUGCON_PORT = 0xE9  # QEMU -debugcon and Xen's HVM debug port


class BootMode(enum.IntEnum):
    """Value in rdi at the kernel entry and in ``shimgen_boot_mode``."""

    XEN_PV = 1
    XEN_PVH = 2
    PVH_NO_XEN = 3


BOOT_MODE_SYMBOL = "shimgen_boot_mode"
BOOT_MODE_TYPE = U32  # the shim stores the mode with a 32-bit move

# --- the PV-only hypercalls' arguments (64-bit PV) ---------------------------------

# vm_assist (xen.h): commands, types, and the types Xen accepts from a 64-bit PV
# guest (PV64_VM_ASSIST_MASK in Xen's xen/arch/x86/include/asm/domain.h, 4.17); an
# HVM/PVH guest may ask runstate_update_flag only (HVM_VM_ASSIST_MASK there).
VMASST_CMD_ENABLE = 0
VMASST_CMD_DISABLE = 1


class VmAssist(enum.IntEnum):
    """VMASST_TYPE_* (xen.h): the lower-case member name is the name there."""

    TYPE_4GB_SEGMENTS = 0
    TYPE_4GB_SEGMENTS_NOTIFY = 1
    TYPE_WRITABLE_PAGETABLES = 2
    TYPE_PAE_EXTENDED_CR3 = 3
    TYPE_ARCHITECTURAL_IOPL = 4
    TYPE_RUNSTATE_UPDATE_FLAG = 5
    TYPE_M2P_STRICT = 32


VMASST_PV64_VALID = sum(1 << assist for assist in VmAssist)
VMASST_TYPE_LIMIT = 64  # Xen tests the type against a 64-bit mask (BITS_PER_LONG)

# set_segment_base (xen/include/public/arch-x86/xen-x86_64.h)
SEGBASE_FS = 0
SEGBASE_GS_USER = 1
SEGBASE_GS_KERNEL = 2
SEGBASE_GS_USER_SEL = 3

# --- memory and segments as a 64-bit PV guest sees them --------------------------------
# xen/include/public/arch-x86/xen-x86_64.h: Xen keeps [HYPERVISOR_VIRT_START,
# HYPERVISOR_VIRT_END) of every PV guest's address space for itself (PML4 slots 256
# to 271) and maps the read-only machine-to-phys table (M2P) at its start.
HYPERVISOR_VIRT_START = 0xFFFF800000000000
HYPERVISOR_VIRT_END = 0xFFFF880000000000
MACH2PHYS_VIRT_START = 0xFFFF800000000000
MACH2PHYS_VIRT_END = 0xFFFF804000000000
# The shim's own window on physical memory under its PV ABI layer (docs/pv-abi.md):
# the first DIRECTMAP_SIZE bytes of guest-physical memory, mapped at the address of
# Xen's own direct map (DIRECTMAP_VIRT_START in Xen's asm/config.h), inside the range
# a PV kernel leaves to the hypervisor, so no kernel mapping ever collides with it.
SHIM_DIRECTMAP_VIRT = 0xFFFF830000000000
SHIM_DIRECTMAP_SIZE = 1 << 32
# How far the shim extends that window at boot over the RAM the memory map has above
# 4 GiB (asm_templates/35_pv_memory.S): 64 GiB of guest-physical memory. The bound
# comes from where the shim builds the layout: below 4 GiB, where its identity map
# reaches, and mfn_list plus the M2P take 16 bytes per 4 KiB frame (256 MiB for
# 64 GiB, well inside the RAM below the hole an xl guest with high RAM has).
SHIM_DIRECTMAP_LIMIT = 1 << 36
# What the M2P holds for a frame the guest has no pfn for: Xen's INVALID_M2P_ENTRY
# (~0UL, xen/arch/x86/include/asm/mm.h; not in the public headers).
INVALID_M2P_ENTRY = (1 << 64) - 1
# xen/include/public/xen.h (start_info): "There is guaranteed to be at least 512kB
# padding after the final bootstrap element" in a PV guest's initial mapping; a PV
# kernel writes its first new page tables there (Mini-OS's build_pagetable).
PV_BOOTSTRAP_PADDING = 512 << 10
M2P_ENTRY_SIZE = 8  # one unsigned long per frame (xen-x86_64.h: machine_to_phys_mapping)
# The PV GDT the shim runs a kernel on (asm_templates/36_pv_traps.S), right after the
# most the direct map can reach, in the same PML4 slot: FIRST_RESERVED_GDT_PAGE pages that map the
# kernel's set_gdt frames (a zero page until then), and the page of Xen's entries.
SHIM_GDT_VIRT = SHIM_DIRECTMAP_VIRT + SHIM_DIRECTMAP_LIMIT
# xen/include/public/arch-x86/xen.h: the GDT entries from FIRST_RESERVED_GDT_ENTRY on
# are Xen's; a PV guest's own GDT (set_gdt) fills at most the pages below.
FIRST_RESERVED_GDT_PAGE = 14
FIRST_RESERVED_GDT_BYTE = FIRST_RESERVED_GDT_PAGE * PAGE_SIZE
FIRST_RESERVED_GDT_ENTRY = FIRST_RESERVED_GDT_BYTE // 8
# xen-x86_64.h: the flat selectors Xen provides a 64-bit PV guest (RPL 3: the guest
# kernel runs in ring 3 there); the kernel's and the user's are the same values.
FLAT_RING3_CS32 = 0xE023
FLAT_RING3_CS64 = 0xE033
FLAT_RING3_DS32 = 0xE02B
FLAT_RING3_DS64 = 0x0000
FLAT_RING3_SS32 = 0xE02B
FLAT_RING3_SS64 = 0xE02B
FLAT_KERNEL_CS64 = FLAT_RING3_CS64
FLAT_KERNEL_DS64 = FLAT_RING3_DS64
FLAT_KERNEL_SS64 = FLAT_RING3_SS64

# --- errno values of hypercall results, negated in rax (xen/include/public/errno.h) --

EPERM = 1
ENOENT = 2
ESRCH = 3  # the emulator's answer for a domain it does not know
E2BIG = 7
EAGAIN = 11
ENOMEM = 12
EACCES = 13
EFAULT = 14  # a guest pointer the hypervisor cannot read or write
EBUSY = 16
EEXIST = 17
EINVAL = 22
ENOSYS = 38
EOPNOTSUPP = 95

# --- x86: the registers the PV ABI's handlers set (Intel SDM vol. 3, AMD APM vol. 2)

CR0_TS = 1 << 3  # task switched: the next FPU/SSE instruction raises #NM
MSR_FS_BASE = 0xC0000100
MSR_GS_BASE = 0xC0000101
MSR_SHADOW_GS_BASE = 0xC0000102  # KernelGSbase: what swapgs exchanges with GS base
VIRTUAL_ADDRESS_BITS = 48  # 4-level paging: canonical addresses sign-extend bit 47
# Debug registers (SDM vol. 3, 18.2): DR0-DR3 hold addresses; DR6 status and DR7
# control have reserved bits that read as 1 or must be 0 (the upper 32 bits are 0).


class DebugReg(enum.IntEnum):
    """The debug registers set_debugreg and get_debugreg take (their reg argument)."""

    DR0 = 0
    DR1 = 1
    DR2 = 2
    DR3 = 3  # the last address register
    DR6 = 6  # status
    DR7 = 7  # control


DR6_WRITABLE = 0xFFFFEFFF  # bit 12 and bits 32-63 are 0
DR6_ONES = 0xFFFF0FF0  # bits 4-11 and 16-31 read as 1
DR7_WRITABLE = 0xFFFF27FF  # bits 11, 12, 14, 15 and 32-63 are 0
DR7_ONES = 1 << 10
DR7_RW_LOW_BITS = 0x11110000  # the low bit of each R/W field (16 + 4i); 10b = I/O

# --- page-table hypercalls of a 64-bit PV guest (xen/include/public/xen.h) -----------
# update_va_mapping's flags: the flush type in bits 0-1, then which vCPUs' TLBs
# (UVMF_LOCAL = 0, UVMF_ALL, or else a pointer to a vCPU bitmap).
UVMF_NONE = 0
UVMF_TLB_FLUSH = 1
UVMF_INVLPG = 2
UVMF_FLUSHTYPE_MASK = 3
UVMF_LOCAL = 0
UVMF_ALL = 4
# Xen's _PAGE_GNTTAB (xen/arch/x86/include/asm/x86_64/page.h, not a public header):
# the one bit of a present L1 entry no 64-bit PV domain may set (L1_DISALLOW_MASK in
# xen/arch/x86/mm.c; the cache attributes are refused only to a domain without
# cache-flush rights, and the shim lets the hardware have them).
PTE_GNTTAB_BIT = 62
PTE_ACCESSED = 1 << 5
PTE_DIRTY = 1 << 6

# mmu_update (xen.h): an array of (ptr, val); ptr's low bits the command
MMU_UPDATE = Record(
    "mmu_update",
    (
        Field("ptr", U64, "machine address of the entry | MMU_* command"),
        Field("val", U64, "the new entry"),
    ),
    doc="one request of mmu_update (xen.h)",
)
MMU_NORMAL_PT_UPDATE = 0
MMU_MACHPHYS_UPDATE = 1
MMU_PT_UPDATE_PRESERVE_AD = 2
MMU_PT_UPDATE_NO_TRANSLATE = 3
# mmu_update's foreigndom: bits 0-15 the owner of the pages mapped, bits 16-31 (+1)
# that of the page tables (0: the caller)
MMU_PT_OWNER_MASK = 0xFFFF0000
MMU_CMD_MASK = 7  # sizeof(l1_pgentry_t) - 1: the command bits of ptr (Xen's mm.c)


class Mmuext(enum.IntEnum):
    """MMUEXT_* commands of mmuext_op (xen.h); the lower-case name is xen.h's."""

    PIN_L1_TABLE = 0
    PIN_L2_TABLE = 1
    PIN_L3_TABLE = 2
    PIN_L4_TABLE = 3
    UNPIN_TABLE = 4
    NEW_BASEPTR = 5
    TLB_FLUSH_LOCAL = 6
    INVLPG_LOCAL = 7
    TLB_FLUSH_MULTI = 8
    INVLPG_MULTI = 9
    TLB_FLUSH_ALL = 10
    INVLPG_ALL = 11
    FLUSH_CACHE = 12
    SET_LDT = 13
    NEW_USER_BASEPTR = 15
    CLEAR_PAGE = 16
    COPY_PAGE = 17
    FLUSH_CACHE_GLOBAL = 18
    MARK_SUPER = 19
    UNMARK_SUPER = 20


MMUEXT_OP = Record(
    "mmuext_op",
    (
        Field("cmd", U32, "MMUEXT_*"),
        Field("arg1", U64, "mfn, or linear_addr (INVLPG_*, SET_LDT)"),
        Field("arg2", U64, "nr_ents (SET_LDT), vcpumask (*_MULTI), src_mfn (COPY_PAGE)"),
    ),
    doc="one operation of mmuext_op (xen.h; arg1 and arg2 are unions)",
)
LDT_MAX_ENTRIES = 8192  # Xen's do_mmuext_op refuses a longer LDT (xen/arch/x86/mm.c)

MULTICALL_ENTRY = Record(
    "multicall_entry",
    (
        Field("op", U64, "__HYPERVISOR_*"),
        Field("result", U64, "written by the hypervisor"),
        *(Field(f"arg{n}", U64) for n in range(6)),
    ),
    doc="one call of multicall (xen.h; args[6] as six fields)",
)

# --- traps, segments and callbacks of a 64-bit PV guest ---------------------------------
# xen/include/public/arch-x86/xen.h: set_trap_table's array, ended by an entry whose
# address is 0. flags: bits 0-1 the DPL a software interrupt needs, bit 2 (TI_GET_IF)
# events masked on entry.
TRAP_INFO = Record(
    "trap_info",
    (
        Field("vector", U8, "exception vector"),
        Field("flags", U8, "0-1: DPL; 2: events masked on entry"),
        Field("cs", U16, "code selector"),
        Field("address", U64, "handler, 0 ends the array"),
    ),
    doc="one entry of set_trap_table's array (arch-x86/xen.h)",
)
TI_FLAG_IF = 1 << 2  # TI_GET_IF: the handler runs with events masked
TI_DPL_MASK = 3  # TI_GET_DPL: an int N from kernel mode needs DPL >= 1 (Xen's permit_softint)
# xen-x86_64.h: what the kernel leaves on its stack when it jumps to the iret slot
IRET_CONTEXT = Record(
    "iret_context",
    tuple(
        Field(name, U64)
        for name in ("rax", "r11", "rcx", "flags", "rip", "cs", "rflags", "rsp", "ss")
    ),
    doc="the iret hypercall's frame, top of the stack first (xen-x86_64.h)",
)
VGCF_IN_SYSCALL = 1 << 8  # iret_context.flags: return as sysret would (xen-x86_64.h)
# xen/include/public/callback.h
CALLBACKOP_REGISTER = 0
CALLBACKOP_UNREGISTER = 1
CALLBACKF_MASK_EVENTS = 1 << 0


class CallbackType(enum.IntEnum):
    """CALLBACKTYPE_* (callback.h, current interface: sysenter is 5, the deprecated
    3 is refused as Xen's 64-bit register_guest_callback refuses it)."""

    EVENT = 0
    FAILSAFE = 1
    SYSCALL = 2
    NMI = 4
    SYSENTER = 5
    SYSCALL32 = 7


CALLBACK_REGISTER = Record(
    "callback_register",
    (
        Field("type", U16, "CALLBACKTYPE_*"),
        Field("flags", U16, "CALLBACKF_*"),
        Field("address", U64, "xen_callback_t: the handler (64-bit)"),
    ),
    doc="CALLBACKOP_register's argument (callback.h)",
)
CALLBACK_UNREGISTER = Record(
    "callback_unregister",
    (Field("type", U16, "CALLBACKTYPE_*"), Field("_unused", U16)),
    doc="CALLBACKOP_unregister's argument (callback.h)",
)
# xen.h struct vcpu_info (vcpu_info[0] at the start of shared_info), with
# xen-x86_64.h's struct arch_vcpu_info: the fields the trap machinery reads and writes.
VCPU_INFO = Record(
    "vcpu_info",
    (
        Field("evtchn_upcall_pending", U8),
        Field("evtchn_upcall_mask", U8),
        Field("evtchn_pending_sel", U64),
        Field("cr2", U64, "arch.cr2: the address of the last #PF"),
        Field("pad", U64, "arch.pad"),
    ),
    doc="the start of struct vcpu_info (xen.h, xen-x86_64.h)",
)
# Exceptions (Intel SDM vol. 3, 6.3.1): the vectors whose delivery pushes an error code
# (X86_EXC_HAVE_EC in Xen's asm/x86-defns.h): #DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP,
# #VC, #SX.
EXC_UD = 6
EXC_GP = 13
EXC_PF = 14
EXC_NMI = 2
EXC_WITH_ERROR_CODE = frozenset({8, 10, 11, 12, EXC_GP, EXC_PF, 17, 21, 29, 30})
# Vectors 32-255 are not exceptions (SDM vol. 3, 6.2): at CPL 0 with no device
# interrupt routed, only an int N (or Xen's upcall vector) raises them.
FIRST_SOFTINT_VECTOR = 32
# An error code naming an IDT gate: (vector << 3) | IDT (SDM vol. 3, 6.13; X86_XEC_IDT)
ERROR_CODE_IDT = 1 << 1
ERROR_CODE_INDEX_SHIFT = 3
IDT_VECTORS = 256
IDT_GATE_SIZE = 16  # a 64-bit gate (SDM vol. 3, 6.14.1)
IDT_INTERRUPT_GATE = 0x8E  # P, DPL 0, type 1110b: interrupts off on entry
EFLAGS_TF = 1 << 8
EFLAGS_IF = 1 << 9
EFLAGS_DF = 1 << 10
EFLAGS_IOPL = 3 << 12
EFLAGS_VM = 1 << 17
EFLAGS_MBS = 1 << 1  # always 1
# The rflags bits an iret may restore (Xen's X86_EFLAGS_ALL less IOPL and VM).
EFLAGS_ALL = 0x003F7FD5
# The descriptors of the PV GDT's flat selectors as the shim runs a kernel at CPL 0
# (docs/pv-abi.md): FLAT_RING3_CS64's entry a DPL 0 64-bit code segment (the CS the
# CPU runs the kernel with, 0xe030), FLAT_RING3_DS32's a DPL 3 flat data segment (an
# RPL 3 selector loads into ds/es/fs/gs at CPL 0 only from DPL 3), FLAT_RING3_CS32's a
# DPL 3 32-bit code segment, as Xen's.
GDT_DATA_DPL3 = 0x00CFF2000000FFFF
GDT_CODE32_DPL3 = 0x00CFFA000000FFFF
# 64-bit segment descriptors (SDM vol. 3, 3.4.5): the S bit (code/data, not system),
# the present bit, and the system type field
DESC_S = 1 << 44
DESC_P = 1 << 47
DESC_CODE = 1 << 43  # of a code/data descriptor: code, not data
DESC_READABLE = 1 << 41  # of a code descriptor: readable (of a data one: writable)
# lar's access rights are the descriptor's second double word masked (SDM vol. 2, LAR)
DESC_ACCESS_SHIFT = 32
DESC_DPL_MASK = 3 << 45
DESC_TYPE_SHIFT = 40
DESC_TYPE_MASK = 0xF
# arch-x86/xen.h XEN_EMULATE_PREFIX and XEN_CPUID: the bytes a PV kernel puts before
# cpuid (ud2; "xen") to have Xen's view of it; Xen emulates the cpuid on the #UD
XEN_EMULATE_PREFIX = b"\x0f\x0bxen"
XEN_CPUID = XEN_EMULATE_PREFIX + b"\x0f\xa2"


# xen/include/public/io/console.h: a domU's console ring. The guest writes its output
# into out[] (indices free-running, taken modulo the array's size), advances out_prod
# and notifies the console's event channel; the backend (xenconsoled) consumes up to
# out_prod and advances out_cons.
XENCONS_INTERFACE = Record(
    "xencons_interface",
    (
        Field("in", CharArray(1024), "input from the backend"),
        Field("out", CharArray(2048), "output to the backend"),
        Field("in_cons", U32),
        Field("in_prod", U32),
        Field("out_cons", U32),
        Field("out_prod", U32),
    ),
    doc="the console ring page (io/console.h)",
)
