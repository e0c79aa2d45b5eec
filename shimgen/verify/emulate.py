"""Run a patched image's shim in Unicorn from a Xen- or QEMU-like start state.

One UC_MODE_64 engine runs both paths (a UC_MODE_32 engine of Unicorn 2.1 cannot
read the 64-bit registers after the mode switch). Guest physical memory is one
RAM block at 0; the image's PT_LOADs are copied to their p_paddr as every loader
does. The emulator plays the hypervisor:

* PV: long mode with page tables mapping the kernel at p_paddr + (VIRT_BASE -
  PADDR_OFFSET), start_info and a boot stack after the kernel, rsi and rsp set, the
  hypercall page filled (Xen does that for a PV guest with a HYPERCALL_PAGE note).
* PVH: 32-bit flat protected mode, paging off, ebx = hvm_start_info (v1 or v0)
  with cmdline, one module and (v1) a memory map after the image, as Xen's
  toolstack places them. The registers PVH leaves unspecified (eax, ecx, edx, esi,
  edi, ebp, esp) and EFLAGS hold recognisable values (PVH_LOADER_REGISTERS), so a
  test can see what a shim passes on untouched.
* PV also carries one module (mapped after the kernel, mod_start its virtual
  address, or its frame number with SIF_MOD_START_PFN).
* Xen present: cpuid leaves 0x40000000.. answer "XenVMMXenVMM"; a wrmsr to the
  hypercall MSR fills the named page with ``mov $nr, %eax; vmcall; ret`` stubs;
  vmcall is answered (memory_op: memory_map, add_to_physmap of shared_info and
  grant-table frames; hvm_op: get_param, set_param of the callback IRQ; console_io;
  set_timer_op; grant_table_op setup_table). Unicorn cannot hook
  wrmsr or vmcall by instruction type, so the code hook matches their bytes and
  skips them. ``other_hypervisor`` puts another hypervisor's leaves (Viridian's) at
  0x40000000 first, moving Xen's to 0x40000100 as Xen does for a Viridian guest;
  without Xen it plays KVM or Hyper-V alone.
* Memory past the RAM block and below 4 GiB reads as open bus (0xff bytes, mapped
  on first read and listed in ``Result.open_bus``), as on a PC; reading at or above
  4 GiB faults, but for ``high_ram_size`` bytes of RAM from 4 GiB on (the RAM libxl
  puts above the hole), which the default memory map then lists.
* Hostile loaders (issue 6): ``hvm_fields`` overrides any hvm_start_info field the
  loader wrote, ``info_at`` places the struct anywhere (past RAM: truncated),
  ``cmdline_unterminated`` ends the command line at the end of RAM with no NUL,
  ``memory`` writes more bytes where a test wants them (a module list, say),
  ``wrong_mode`` enters the PV entry in 32-bit mode or the PVH entry in long mode.
* Exceptions and ``int N`` in long mode go through the guest's IDT as the CPU
  delivers them (Unicorn hands them to a hook instead): the frame pushed on the
  current stack (64-bit mode, no IST, no privilege change), the gate's CS:RIP
  loaded, IF cleared by an interrupt gate. Unicorn does not tell the error code:
  #PF's is worked out from the tables and the faulting instruction (present,
  write), #GP's from an iretq's frame or a segment load's selector, 0 otherwise.
  Each delivery is listed in ``Result.traps``; one with no usable gate stops the
  run as a fault (a real CPU would triple-fault). QEMU marks a delivery finished
  only in the routine the hook replaces, so after each one the emulator clears
  QEMU's record of the exception in flight (_clear_exception_in_flight); without
  that a second fault would come as #DF and a third end the run in silence.
* Unicorn calls the code hook before every instruction; the bytes it matches are
  read once per basic block (_block), not through the page tables per instruction.

It stops when the kernel's entry is about to run (or on hlt, or after an
instruction budget) and reports registers, the instruction count and the boot
structure the kernel gets, decoded with structs: the start_info at rsi
(start-info), the hvm_start_info at rsi with its tables (hvm-start-info: a physical,
under PV pseudo-physical, address), or the loader's hvm_start_info at ebx
(pvh-passthrough, whose kernel entry is its own 32-bit one).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import Refused
from ..read.image import Image
from ..read.shim_view import shim_meta
from ..shim import pagetables as pt
from ..structs import (
    HVM_MEMMAP_TABLE_ENTRY,
    HVM_MODLIST_ENTRY,
    HVM_START_MAGIC,
    MAX_GUEST_CMDLINE,
    START_INFO_MAGIC,
    E820Type,
    StartInfoFlags,
    XenNote,
    hvm_start_info,
    round_up,
    start_info,
)
from ..structs import xen_abi as abi
from ..structs.clayout import MASK64

RAM_SIZE = 128 << 20
LOW_RAM_END = 0x9FC00  # conventional memory below the EBDA, as a PC BIOS reports
HIGH_RAM_START = 0x100000
EMU_GDT = 0x1000  # the loader's own GDT: null, flat 32-bit code, flat data, 64-bit code
EMU_GDT_ENTRIES = (0, abi.GDT_CODE32, abi.GDT_DATA, abi.GDT_CODE64)
EMU_SEL_CODE32 = EMU_GDT_ENTRIES.index(abi.GDT_CODE32) * abi.GDT_DESCRIPTOR_SIZE
EMU_SEL_DATA = EMU_GDT_ENTRIES.index(abi.GDT_DATA) * abi.GDT_DESCRIPTOR_SIZE
EMU_GDT_LIMIT = abi.GDT_DESCRIPTOR_SIZE * len(EMU_GDT_ENTRIES) - 1
XEN_HYPERCALL_MSR = 0x40000000  # what the emulated Xen reports in leaf base+2
XEN_VERSION = (4, 17)
OPEN_BUS_LIMIT = 1 << 32  # unbacked reads below this return 0xff; above, they fault
HIGH_RAM_BASE = OPEN_BUS_LIMIT  # where StartState.high_ram_size's block starts
OPEN_BUS_BYTE = 0xFF
# Viridian (Hyper-V) leaves: "Microsoft Hv", highest leaf base + 5
OTHER_HYPERVISOR_SIGNATURE = b"Microsoft Hv"
OTHER_HYPERVISOR_LEAVES = 5
MODULE_BYTES = b"shimgen emulated module\n" * 100
INSTRUCTION_BUDGET = 2_000_000
# Finding CPUX86State.old_exception in a Unicorn context (_exception_in_flight_offset)
DEBUG_REGISTERS = 8  # dr[8], just before the breakpoint pointers
BREAKPOINT_POINTERS = 4  # cpu_breakpoint[4] / cpu_watchpoint[4], then old_exception
DEBUG_REGISTER_MARK = 0x5EED_D0D0_0000_0000  # values no fresh CPU holds
NO_EXCEPTION = (-1).to_bytes(4, "little", signed=True)
# Unicorn's emu_start stops when rip reaches its "until" address, and 0 is an address
# too: a kernel entered at 0 (Mini-OS and Unikraft link there) would stop before the
# kernel-entry hook ran. A non-canonical address is never fetched from.
NEVER_REACHED = 1 << 63
# HVM params the emulated toolstack set up for the guest: where libxl puts them for a
# PVH domU, in its special pages just below 0xff000000 (a reserved range of the map)
FAKE_PARAMS = {
    abi.HvmParam.STORE_PFN: 0xFEFFC,
    abi.HvmParam.STORE_EVTCHN: 1,
    abi.HvmParam.CONSOLE_PFN: 0xFEFFF,
    abi.HvmParam.CONSOLE_EVTCHN: 2,
}
SPECIAL_PAGES = 8  # libxl's HVM special pages (xenstore, console...): owned, not RAM
OP_WRMSR = b"\x0f\x30"
# MSRs Unicorn's own wrmsr sets (the mode switch, the PV ABI's set_segment_base);
# any other is the emulated Xen's to answer
NATIVE_MSRS = frozenset(
    {
        *(abi.MSR_EFER, abi.MSR_FS_BASE, abi.MSR_GS_BASE, abi.MSR_SHADOW_GS_BASE),
        *(abi.MSR_STAR, abi.MSR_LSTAR, abi.MSR_SFMASK),  # the PV ABI's syscall entry
    }
)
OP_SYSCALL = b"\x0f\x05"
OP_VMCALL = (b"\x0f\x01\xc1", b"\x0f\x01\xd9")  # Intel vmcall, AMD vmmcall
OP_HLT = 0xF4
OP_SPIN = b"\xeb\xfe"  # jmp to itself: how a PV guest (no hlt at CPL 3) stops for good
# What an emulated PVH loader leaves in the registers PVH does not define: values no
# shim would compute, so a pass-through is visible (EFLAGS: CF, DF and bit 1).
PVH_LOADER_REGISTERS = {
    "rax": 0x2BADB002,
    "rcx": 0xC0C0C0C0,
    "rdx": 0xD0D0D0D0,
    "rsi": 0x51515151,
    "rdi": 0xD1D1D1D1,
    "rbp": 0xB0B0B0B0,
    "rsp": 0x7F00,
    "rflags": 0x403,
}
MAX_DECODED = 16  # entries of a module list or memory map shown
# Exception delivery (Intel SDM vol. 3, 6.12 and 6.14): the gate types,
# what a 64-bit trap clears in RFLAGS (TF, NT, RF, VM; IF too through an interrupt
# gate) and the #PF error code's bits
GATE_PRESENT, GATE_TYPE, GATE_INTERRUPT, GATE_TRAP = 0x80, 0xF, 0xE, 0xF
EFLAGS_CLEARED_ON_TRAP = abi.EFLAGS_TF | (1 << 14) | (1 << 16) | abi.EFLAGS_VM
PFEC_PRESENT, PFEC_WRITE = 1 << 0, 1 << 1


@dataclass
class StartState:
    mode: str  # "pv" | "pvh"
    cmdline: bytes = b""
    xen: bool = True
    hvm_version: int = 1
    bad_magic: bool = False
    flags: int = 0
    other_hypervisor: bool = False  # another hypervisor's cpuid leaves come first
    hvm_fields: dict[str, int] = field(default_factory=dict)  # written over the loader's
    info_at: int | None = None  # physical address of hvm_start_info (default: after the image)
    cmdline_unterminated: bool = False  # the command line ends at the end of RAM, no NUL
    wrong_mode: bool = False  # PV entry in 32-bit mode, PVH entry in long mode
    memory: dict[int, bytes] = field(default_factory=dict)  # more the loader wrote: paddr -> bytes
    # the memory map the loader passes (v1 table, XENMEM_memory_map): (addr, size, E820
    # type) entries; None: a PC's map of the emulated RAM (Machine.pc_memory_map)
    memmap: tuple[tuple[int, int, int], ...] | None = None
    # pages XENMEM_current_reservation reports; None: the map's RAM pages and the
    # special pages (what a domain without populate-on-demand owns)
    reservation: int | None = None
    watch: dict[str, int] = field(default_factory=dict)  # name -> address: count at first run
    run_kernel: bool = False  # go on past the kernel's entry, up to its hlt
    ram_size: int = RAM_SIZE  # the RAM block at 0 (a PC map's RAM ends there)
    # a second RAM block at 4 GiB (HIGH_RAM_BASE), as libxl gives a guest too big for
    # the RAM below its MMIO hole; a PC map lists it. Reads past it still fault.
    high_ram_size: int = 0
    budget: int = INSTRUCTION_BUDGET  # instructions before the run stops ("budget")


@dataclass
class Result:
    mode: str
    xen: bool
    hvm_version: int
    # "kernel-entry" | "halted" | "budget" | "fault: ..."; with run_kernel, a kernel
    # that reaches its hlt: "kernel-halted"
    outcome: str
    instructions: int  # all of them (with run_kernel, the kernel's too)
    kernel_entry: int
    registers: dict[str, int]  # at the end (the kernel's entry unless run_kernel)
    start_info: dict[str, Any] | None
    start_info_raw: bytes = field(repr=False, default=b"")
    handoff: str = "start-info"
    hvm_start_info: dict[str, Any] | None = None  # with "cmdline", "modules", "memmap"
    boot_mode_var: int | None = None  # the kernel's shimgen_boot_mode at its entry
    kernel_instructions: int = 0  # run_kernel: from the kernel's entry to its hlt
    debug_output: bytes = b""
    console_output: bytes = b""  # what the kernel wrote to its console ring (PVH, Xen)
    hypercalls: list[str] = field(default_factory=list)
    traps: list[str] = field(default_factory=list)  # exceptions delivered through the IDT
    trace: list[str] = field(default_factory=list)
    loader: dict[str, int] = field(default_factory=dict)  # what the loader passed
    reached: dict[str, int] = field(default_factory=dict)  # watched name -> instructions before
    open_bus: list[int] = field(default_factory=list)  # pages read past RAM (below 4 GiB)

    @property
    def reached_kernel(self) -> bool:
        return self.outcome in ("kernel-entry", "kernel-halted")

    def to_json(self) -> dict[str, Any]:
        """Every field; start_info_raw left out (start_info is its decoding)."""
        data = asdict(self)
        del data["start_info_raw"]
        data["debug_output"] = self.debug_output.decode("latin-1")
        data["console_output"] = self.console_output.decode("latin-1")
        return data


class Machine:
    """Guest memory, the emulated hypervisor and the run loop."""

    def __init__(self, image: Image, state: StartState, trace: bool = False) -> None:
        from unicorn import UC_ARCH_X86, UC_MODE_64, Uc

        meta = shim_meta(image)
        if meta is None:
            raise Refused(f"{image.path}: not patched by shimgen: nothing to emulate")
        self.image, self.state, self.meta = image, state, meta
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.ram = state.ram_size
        self.uc.mem_map(0, self.ram)
        if state.high_ram_size:
            self.uc.mem_map(HIGH_RAM_BASE, round_up(state.high_ram_size, abi.PAGE_SIZE))
        self.count = 0
        self.outcome = "budget"
        self.debug = bytearray()
        self.console = bytearray()  # drained from the console ring (_drain_console)
        self.rings_mapped = False
        self.hypercalls: list[str] = []
        self.traps: list[str] = []
        self.block_start, self.block_bytes = 0, b""  # the basic block running (_block)
        self.in_flight_offset = _exception_in_flight_offset()
        self.trace: list[str] | None = [] if trace else None
        self.cr3 = 0
        self.loader: dict[str, int] = {}
        self.grant_frames: dict[int, int] = {}  # XENMAPSPACE_grant_table: index -> gfn
        self.last_byte = 0
        self.watch = {address: name for name, address in state.watch.items()}
        self.reached: dict[str, int] = {}
        self.entry_registers: dict[str, int] | None = None  # at the kernel's entry
        self.entry_count = 0  # instructions run before it
        self.open_bus: list[int] = []  # pages past RAM the shim read
        self.past_ram: set[int] = set()  # pages past RAM mapped (read or loader-written)
        # where the kernel is entered: its 64-bit entry in long mode, or (passthrough)
        # its own 32-bit PVH entry with paging off
        self.passthrough = meta.handoff == "pvh-passthrough"
        self.kernel_entry = (
            meta.original_phys32_entry if self.passthrough else meta.original_pv_entry
        )
        self._load_segments()
        self._write_gdt()
        self.free = round_up(max(s.paddr + s.memsz for s in image.loadable_segments), abi.PAGE_SIZE)

    # --- memory -------------------------------------------------------------------

    def _load_segments(self) -> None:
        for segment in self.image.loadable_segments:
            data = self.image.data[segment.offset : segment.offset + segment.filesz]
            self.uc.mem_write(segment.paddr, data)

    def _write_gdt(self) -> None:
        size = abi.GDT_DESCRIPTOR_SIZE
        table = b"".join(entry.to_bytes(size, "little") for entry in EMU_GDT_ENTRIES)
        self.uc.mem_write(EMU_GDT, table)

    def alloc(self, size: int) -> int:
        address = self.free
        self.free = round_up(address + size, abi.PAGE_SIZE)
        return address

    def write_anywhere(self, paddr: int, data: bytes) -> None:
        """Write data at paddr, in RAM or past it (mapping open-bus pages, as ROM a
        loader filled); what would lie at or above 4 GiB is cut off."""
        data = data[: max(0, OPEN_BUS_LIMIT - paddr)]
        if not data:
            return
        if paddr + len(data) > self.ram:
            self._map_past_ram(paddr, len(data))
        self.uc.mem_write(paddr, data)

    def read(self, paddr: int, size: int) -> bytes:
        return bytes(self.uc.mem_read(paddr, size))

    def phys(self, vaddr: int) -> int:
        """Guest virtual to physical through the current CR3 (identity if paging is off)."""
        from unicorn.x86_const import UC_X86_REG_CR0

        if not self.uc.reg_read(UC_X86_REG_CR0) & abi.CR0_PG:
            return vaddr
        cr3 = self._reg("cr3")
        paddr = pt.translate(self.read, cr3, vaddr)
        if paddr is None:
            raise Refused(f"guest address {vaddr:#x} is not mapped")
        return paddr

    def vread(self, vaddr: int, size: int) -> bytes:
        """size bytes at guest virtual vaddr, each page translated on its own."""
        chunks = []
        while size > 0:
            length = min(size, abi.PAGE_SIZE - vaddr % abi.PAGE_SIZE)
            chunks.append(self.read(self.phys(vaddr), length))
            vaddr, size = vaddr + length, size - length
        return b"".join(chunks)

    def vwrite(self, vaddr: int, data: bytes) -> None:
        self.uc.mem_write(self.phys(vaddr), data)

    def _reg(self, name: str) -> int:
        from unicorn import x86_const

        return self.uc.reg_read(getattr(x86_const, f"UC_X86_REG_{name.upper()}"))

    def _set(self, name: str, value: int) -> None:
        from unicorn import x86_const

        self.uc.reg_write(getattr(x86_const, f"UC_X86_REG_{name.upper()}"), value)

    # --- the emulated hypervisor -------------------------------------------------------

    def memory_map(self) -> list[tuple[int, int, int]]:
        """The map the loader passes: the start state's, else a PC's."""
        if self.state.memmap is not None:
            return list(self.state.memmap)
        return self.pc_memory_map(self.ram, self.state.high_ram_size)

    def reservation(self) -> int:
        """XENMEM_current_reservation's answer: the pages the domain owns."""
        if self.state.reservation is not None:
            return self.state.reservation
        ram = sum(
            max(0, (size - (-addr % abi.PAGE_SIZE)) // abi.PAGE_SIZE)
            for addr, size, kind in self.memory_map()
            if kind == E820Type.RAM
        )
        return ram + SPECIAL_PAGES

    @staticmethod
    def pc_memory_map(ram: int = RAM_SIZE, high_ram: int = 0) -> list[tuple[int, int, int]]:
        """RAM below the EBDA, the BIOS area reserved, RAM from 1 MiB to ram, and
        high_ram bytes of RAM from 4 GiB on."""
        entries = [
            (0, LOW_RAM_END, E820Type.RAM),
            (LOW_RAM_END, HIGH_RAM_START - LOW_RAM_END, E820Type.RESERVED),
            (HIGH_RAM_START, ram - HIGH_RAM_START, E820Type.RAM),
        ]
        if high_ram:
            entries.append((HIGH_RAM_BASE, high_ram, E820Type.RAM))
        return entries

    def fill_hypercall_page(self, paddr: int) -> None:
        stubs = bytearray(abi.PAGE_SIZE)
        for number in range(abi.PAGE_SIZE // abi.HYPERCALL_STUB_SIZE):
            stub = b"\xb8" + number.to_bytes(4, "little") + OP_VMCALL[0] + b"\xc3"
            at = number * abi.HYPERCALL_STUB_SIZE
            stubs[at : at + len(stub)] = stub
        self.uc.mem_write(paddr, bytes(stubs))

    @property
    def xen_base(self) -> int:
        """Xen's first cpuid leaf: the first base no other hypervisor uses."""
        step = abi.XEN_CPUID_LEAF_STRIDE if self.state.other_hypervisor else 0
        return abi.XEN_CPUID_FIRST_LEAF + step

    def _cpuid(self, uc: Any, _user: Any) -> bool:
        leaf = self._reg("eax") & 0xFFFFFFFF
        answer = (0, 0, 0, 0)
        base = self.xen_base
        if self.state.other_hypervisor and leaf == abi.XEN_CPUID_FIRST_LEAF:
            leaf_max = leaf + OTHER_HYPERVISOR_LEAVES
            answer = (leaf_max, *abi.signature_words(OTHER_HYPERVISOR_SIGNATURE))
        elif self.state.xen and leaf == base:
            ebx, ecx, edx = abi.signature_words()
            answer = (leaf + 4, ebx, ecx, edx)
        elif self.state.xen and leaf == base + 1:
            answer = ((XEN_VERSION[0] << 16) | XEN_VERSION[1], 0, 0, 0)
        elif self.state.xen and leaf == base + abi.XEN_CPUID_HYPERCALL_LEAF:
            answer = (1, XEN_HYPERCALL_MSR, 0, 0)
        elif leaf == abi.CPUID_EXT_FEATURES:  # what any x86-64 CPU Xen runs on has
            edx = abi.CPUID_EXT_EDX_SYSCALL | abi.CPUID_EXT_EDX_NX | abi.CPUID_EXT_EDX_LM
            answer = (0, 0, 0, edx)
        for name, value in zip(("rax", "rbx", "rcx", "rdx"), answer, strict=True):
            self._set(name, value)
        return True

    def _unmapped_read(
        self, uc: Any, _access: int, address: int, size: int, _value: int, _user: Any
    ) -> bool:
        """Open bus: a read past RAM below 4 GiB gets 0xff bytes, as on a PC."""
        pages = self._map_past_ram(address, size)
        if pages is None:
            return False
        self.open_bus += pages
        return True

    def _map_past_ram(self, address: int, size: int) -> list[int] | None:
        """Map the pages of [address, address + size) past RAM, filled with 0xff; the
        range may start in RAM. None when it reaches 4 GiB (nothing is mapped)."""
        first = max(address, self.ram)
        last = address + max(size, 1) - 1
        if last >= OPEN_BUS_LIMIT:
            return None
        new = []
        for page in range(first - first % abi.PAGE_SIZE, last + 1, abi.PAGE_SIZE):
            if page not in self.past_ram:
                self.uc.mem_map(page, abi.PAGE_SIZE)
                self.uc.mem_write(page, bytes([OPEN_BUS_BYTE]) * abi.PAGE_SIZE)
                self.past_ram.add(page)
                new.append(page)
        return new

    def _out(self, _uc: Any, port: int, _size: int, value: int, _user: Any) -> None:
        if port == abi.DEBUGCON_PORT:
            self.debug.append(value & 0xFF)

    def _wrmsr(self) -> None:
        msr = self._reg("ecx") & 0xFFFFFFFF
        value = (self._reg("edx") & 0xFFFFFFFF) << 32 | (self._reg("eax") & 0xFFFFFFFF)
        if self.state.xen and msr == XEN_HYPERCALL_MSR:
            self.fill_hypercall_page(value & ~0xFFF)
            self.hypercalls.append(f"wrmsr {msr:#x} <- {value:#x} (hypercall page)")
            return
        raise Refused(f"wrmsr to unknown MSR {msr:#x}")

    def _hypercall(self) -> int:
        number = self._reg("rax")
        arg1, arg2 = self._reg("rdi"), self._reg("rsi")
        if not self.state.xen:
            raise Refused("vmcall without a hypervisor")
        handlers = {
            abi.Hypercall.MEMORY_OP: self._memory_op,
            abi.Hypercall.HVM_OP: self._hvm_op,
            abi.Hypercall.CONSOLE_IO: self._console_io,
            abi.Hypercall.SET_TIMER_OP: self._set_timer_op,
            abi.Hypercall.EVENT_CHANNEL_OP: self._event_channel_op,
            abi.Hypercall.GRANT_TABLE_OP: self._grant_table_op,
        }
        handler = handlers.get(number)
        name = abi.Hypercall(number).name if number in abi.Hypercall._value2member_map_ else number
        result = handler(arg1, arg2) if handler else -abi.ENOSYS
        self.hypercalls.append(f"{name}({arg1:#x}, {arg2:#x}) = {result}")
        return result

    def _memory_op(self, cmd: int, arg: int) -> int:
        if cmd == abi.XENMEM_CURRENT_RESERVATION:
            domid = int.from_bytes(self.vread(arg, 2), "little")
            return self.reservation() if domid == abi.DOMID_SELF else -abi.ESRCH
        if cmd == abi.XENMEM_MEMORY_MAP:
            record = abi.XEN_MEMORY_MAP
            request = record.parse(self.vread(arg, record.size))
            entries = self.memory_map()[: request.nr_entries]
            raw = b"".join(
                abi.E820_ENTRY.build({"addr": a, "size": s, "type": t})[: abi.E820_ENTRY_STRIDE]
                for a, s, t in entries
            )
            self.vwrite(request.buffer, raw)
            self.vwrite(arg, record.build({"nr_entries": len(entries), "buffer": request.buffer}))
            return 0
        if cmd == abi.XENMEM_ADD_TO_PHYSMAP:
            record = abi.XEN_ADD_TO_PHYSMAP
            request = record.parse(self.vread(arg, record.size))
            if request.space == abi.XENMAPSPACE_GRANT_TABLE:
                if request.idx >= abi.MAX_GRANT_FRAMES:
                    return -abi.EINVAL
                self.grant_frames[request.idx] = request.gpfn
                return 0
            if request.space != abi.XENMAPSPACE_SHARED_INFO:
                return -abi.ENOSYS
            self.loader["shared_info_gpfn"] = request.gpfn
            return 0
        return -abi.ENOSYS

    def _grant_table_op(self, cmd: int, arg: int) -> int:
        """GNTTABOP_setup_table as Xen answers an HVM/PVH guest
        (xen/common/grant_table.c gnttab_setup_table): each frame's gfn where
        XENMAPSPACE_grant_table put it, INVALID (the M2P's entry of a frame never
        mapped) otherwise; more frames than the domain may have: general error."""
        if cmd != abi.GNTTABOP_SETUP_TABLE:
            return -abi.ENOSYS
        if self._reg("rdx") != 1:
            return -abi.EINVAL
        record = abi.GNTTAB_SETUP_TABLE
        request = record.parse(self.vread(arg, record.size))
        status = abi.GNTST_OKAY
        if request.nr_frames > abi.MAX_GRANT_FRAMES:
            status = abi.GNTST_GENERAL_ERROR
        else:
            for index in range(request.nr_frames):
                gfn = self.grant_frames.get(index, abi.INVALID_M2P_ENTRY)
                self.vwrite(request.frame_list + 8 * index, gfn.to_bytes(8, "little"))
        self.vwrite(arg + record.offset_of("status"), (status & 0xFFFF).to_bytes(2, "little"))
        return 0

    def _hvm_op(self, cmd: int, arg: int) -> int:
        record = abi.XEN_HVM_PARAM
        if cmd == abi.HVMOP_SET_PARAM:  # the event channel upcall, recorded
            request = record.parse(self.vread(arg, record.size))
            if request.index != abi.HvmParam.CALLBACK_IRQ:
                return -abi.ENOSYS
            self.loader["callback_irq"] = request.value
            return 0
        if cmd != abi.HVMOP_GET_PARAM:
            return -abi.ENOSYS
        request = record.parse(self.vread(arg, record.size))
        if request.index not in FAKE_PARAMS:
            return -abi.ENOSYS
        values = dict(request) | {"value": FAKE_PARAMS[request.index]}
        self.vwrite(arg, record.build(values))
        return 0

    @staticmethod
    def _set_timer_op(_timeout: int, _unused: int) -> int:
        """Xen's do_set_timer_op (xen/common/sched/core.c), served to HVM/PVH guests
        too: it arms or (0) stops the vCPU's one-shot timer and always answers 0. No
        time passes here, so nothing fires."""
        return 0

    def _event_channel_op(self, cmd: int, arg: int) -> int:
        """EVTCHNOP_send on the console's port: the emulated console backend drains
        the ring into console_output, as xenconsoled does; everything else -ENOSYS."""
        if cmd != abi.EVTCHNOP_SEND:
            return -abi.ENOSYS
        port = int.from_bytes(self.vread(arg, 4), "little")
        if port == FAKE_PARAMS[abi.HvmParam.CONSOLE_EVTCHN] and self.rings_mapped:
            self._drain_console()
        return 0

    def _drain_console(self) -> None:
        ring = FAKE_PARAMS[abi.HvmParam.CONSOLE_PFN] << abi.PAGE_SHIFT
        layout = abi.XENCONS_INTERFACE
        out = ring + layout.offset_of("out")
        size = layout.offset_of("in_cons") - layout.offset_of("out")  # char out[2048]
        cons_at, prod_at = ring + layout.offset_of("out_cons"), ring + layout.offset_of("out_prod")
        cons = int.from_bytes(self.read(cons_at, 4), "little")
        prod = int.from_bytes(self.read(prod_at, 4), "little")
        pending = min((prod - cons) & 0xFFFFFFFF, size)  # a bad index takes one ring's worth
        text = self.read(out, size)
        self.console += bytes(text[index % size] for index in range(cons, cons + pending))
        self.uc.mem_write(cons_at, ((cons + pending) & 0xFFFFFFFF).to_bytes(4, "little"))

    def map_rings(self) -> None:
        """The console and xenstore pages of a PVH domU, zeroed as libxl leaves them
        (unless the start state wrote them already)."""
        for param in (abi.HvmParam.CONSOLE_PFN, abi.HvmParam.STORE_PFN):
            page = FAKE_PARAMS[param] << abi.PAGE_SHIFT
            if self._map_past_ram(page, abi.PAGE_SIZE):
                self.uc.mem_write(page, bytes(abi.PAGE_SIZE))
        self.rings_mapped = True

    def _console_io(self, cmd: int, length: int) -> int:
        if cmd == abi.CONSOLEIO_WRITE:
            self.debug += self.vread(self._reg("rdx"), length)
            return 0
        return -abi.ENOSYS

    # --- run -----------------------------------------------------------------------

    def _code(self, uc: Any, address: int, size: int, _user: Any) -> None:
        if (
            self.entry_registers is None
            and address == self.kernel_entry
            and self._long_mode() != self.passthrough
        ):
            self.entry_registers = self.registers()
            self.entry_count = self.count
            if not self.state.run_kernel:
                self.outcome = "kernel-entry"
                uc.emu_stop()
                return
        name = self.watch.get(address)
        if name is not None and name not in self.reached:
            self.reached[name] = self.count
        self.count += 1
        offset = address - self.block_start
        head = self.block_bytes[offset : offset + min(size, 3)]
        if len(head) < min(size, 3):  # Unicorn began no block here (a rip we set)
            head = self.vread(address, min(size, 3))
        self.last_byte = head[0]
        if self.trace is not None:
            self.trace.append(f"{address:#x} {head.hex()}")
        if head[:2] == OP_SPIN:
            self.outcome = "halted"
            uc.emu_stop()
        elif head[:2] == OP_WRMSR and (self._reg("ecx") & 0xFFFFFFFF) not in NATIVE_MSRS:
            self._wrmsr()
            self._set("rip", address + len(OP_WRMSR))
        elif head in OP_VMCALL:
            self._set("rax", self._hypercall() & MASK64)
            self._set("rip", address + len(head))
        elif head[:2] == OP_SYSCALL and self._long_mode():
            self._syscall(address + len(OP_SYSCALL))

    def _syscall(self, next_rip: int) -> None:
        """A 64-bit syscall as the CPU performs it (SDM vol. 2, SYSCALL), which Unicorn
        replaces with its hook: #UD without EFER.SCE; else rcx = the next rip, r11 =
        rflags, rflags less SFMASK's bits, CS from STAR bits 32-47, rip = LSTAR. SS,
        which the CPU loads with fixed attributes from STAR's selector + 8, is left
        as it was (Unicorn would load it as a descriptor)."""
        msr = _reg_const("MSR")
        if not self.uc.reg_read(msr, abi.MSR_EFER) & abi.EFER_SCE:
            self.traps.append(f"syscall at {next_rip - len(OP_SYSCALL):#x} without EFER.SCE")
            if not self._deliver(abi.EXC_UD):
                self.uc.emu_stop()
            return
        rflags = self._reg("rflags")
        self._set("rcx", next_rip)
        self._set("r11", rflags)
        self._set("rflags", rflags & ~self.uc.reg_read(msr, abi.MSR_SFMASK))
        self._set("cs", self.uc.reg_read(msr, abi.MSR_STAR) >> 32 & 0xFFFC)
        self._set("rip", self.uc.reg_read(msr, abi.MSR_LSTAR))

    def _block(self, _uc: Any, address: int, size: int, _user: Any) -> None:
        self.block_start = address
        try:
            self.block_bytes = self.vread(address, size)
        except Refused:  # the fetch faults; the code hook never runs on these bytes
            self.block_bytes = b""

    # --- exceptions through the guest's IDT -------------------------------------------

    def _interrupt(self, uc: Any, vector: int, _user: Any) -> None:
        if not self._deliver(vector):
            uc.emu_stop()
        self._clear_exception_in_flight()

    def _clear_exception_in_flight(self) -> None:
        """Tell QEMU the exception was delivered, as its own delivery routine (which
        Unicorn's interrupt hook replaces) does by setting CPUX86State.old_exception
        to -1; left set, QEMU's check_exception turns the next contributory fault or
        #PF into #DF and the one after into a silent triple fault."""
        import ctypes

        context = self.uc.context_save()
        ctypes.memmove(context.context.value + self.in_flight_offset, NO_EXCEPTION, 4)
        self.uc.context_restore(context)

    def _invalid_opcode(self, _uc: Any, _user: Any) -> bool:
        return self._deliver(abi.EXC_UD)

    def _deliver(self, vector: int) -> bool:
        """Deliver vector through the IDT as a 64-bit CPU at CPL 0 does; False (and a
        fault outcome) when there is no gate to deliver it through."""
        rip = self._reg("rip")
        gate = self._gate(vector)
        if gate is None:
            self.outcome = f"fault: exception {vector} at {rip:#x} with no IDT gate"
            return False
        selector, offset, interrupt_gate = gate
        frame = [self._reg("ss"), self._reg("rsp"), self._reg("rflags"), self._reg("cs"), rip]
        note = f"{vector:#x} at {rip:#x}"
        if vector in abi.EXC_WITH_ERROR_CODE:
            error = self._error_code(vector, rip)
            frame.append(error)
            note += f" error {error:#x}"
        self.traps.append(note)
        rsp = self._reg("rsp") & ~0xF
        for value in frame:
            rsp -= 8
            self.vwrite(rsp, (value & MASK64).to_bytes(8, "little"))
        cleared = EFLAGS_CLEARED_ON_TRAP | (abi.EFLAGS_IF if interrupt_gate else 0)
        self._set("rflags", self._reg("rflags") & ~cleared)
        self._set("rsp", rsp)
        self._set("cs", selector)
        self._set("rip", offset)
        return True

    def _gate(self, vector: int) -> tuple[int, int, bool] | None:
        """(selector, offset, interrupt gate) of vector's present 64-bit gate, or None."""
        _selector, base, limit, _flags = self.uc.reg_read(_reg_const("IDTR"))
        if not self._long_mode() or limit < (vector + 1) * abi.IDT_GATE_SIZE - 1:
            return None
        try:
            raw = self.vread(base + vector * abi.IDT_GATE_SIZE, abi.IDT_GATE_SIZE)
        except Refused:
            return None
        low, high = int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")
        kind = low >> 40 & 0xFF
        if not kind & GATE_PRESENT or kind & GATE_TYPE not in (GATE_INTERRUPT, GATE_TRAP):
            return None
        offset = (low & 0xFFFF) | (low >> 48 & 0xFFFF) << 16 | (high & 0xFFFFFFFF) << 32
        return low >> 16 & 0xFFFF, offset, kind & GATE_TYPE == GATE_INTERRUPT

    def _error_code(self, vector: int, rip: int) -> int:
        if vector == abi.EXC_PF:
            return self._page_fault_code(rip)
        if vector == abi.EXC_GP:
            return self._protection_fault_code(rip)
        return 0

    def _instruction(self, rip: int) -> Any:
        import capstone

        engine = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        engine.detail = True
        try:
            code = self.vread(rip, 15)
        except Refused:
            return None
        return next(engine.disasm(code, rip), None)

    def _page_fault_code(self, rip: int) -> int:
        """P when the page is mapped (a protection fault), W when the faulting
        instruction writes memory (Intel SDM vol. 3, 4.7); supervisor, data."""
        import capstone

        present = pt.translate(self.read, self._reg("cr3"), self._reg("cr2")) is not None
        code = PFEC_PRESENT if present else 0
        insn = self._instruction(rip)
        if insn is not None and any(
            op.type == capstone.x86.X86_OP_MEM and op.access & capstone.CS_AC_WRITE
            for op in insn.operands
        ):
            code |= PFEC_WRITE
        return code

    def _protection_fault_code(self, rip: int) -> int:
        """The selector a #GP names: an iretq's CS, a segment load's selector, else 0."""
        import capstone

        insn = self._instruction(rip)
        if insn is None:
            return 0
        if insn.mnemonic == "iretq":
            return int.from_bytes(self.vread(self._reg("rsp") + 8, 2), "little") & ~3
        if insn.mnemonic == "mov" and insn.operands[0].type == capstone.x86.X86_OP_REG:
            name = insn.reg_name(insn.operands[0].reg)
            if name in ("ds", "es", "fs", "gs", "ss") and insn.operands[1].type == (
                capstone.x86.X86_OP_REG
            ):
                return self._reg(insn.reg_name(insn.operands[1].reg)) & 0xFFFC
        return 0

    def _long_mode(self) -> bool:
        from unicorn.x86_const import UC_X86_REG_CR0

        return bool(self.uc.reg_read(UC_X86_REG_CR0) & abi.CR0_PG)

    def run(self, start: int) -> None:
        from unicorn import (
            UC_HOOK_BLOCK,
            UC_HOOK_CODE,
            UC_HOOK_INSN,
            UC_HOOK_INSN_INVALID,
            UC_HOOK_INTR,
            UC_HOOK_MEM_READ_UNMAPPED,
            UcError,
        )
        from unicorn.x86_const import UC_X86_INS_CPUID, UC_X86_INS_OUT

        self.uc.hook_add(UC_HOOK_BLOCK, self._block)
        self.uc.hook_add(UC_HOOK_CODE, self._code)
        self.uc.hook_add(UC_HOOK_INTR, self._interrupt)
        self.uc.hook_add(UC_HOOK_INSN_INVALID, self._invalid_opcode)
        self.uc.hook_add(UC_HOOK_MEM_READ_UNMAPPED, self._unmapped_read)
        self.uc.hook_add(UC_HOOK_INSN, self._cpuid, None, 1, 0, UC_X86_INS_CPUID)
        self.uc.hook_add(UC_HOOK_INSN, self._out, None, 1, 0, UC_X86_INS_OUT)
        try:
            self.uc.emu_start(start, NEVER_REACHED, count=self.state.budget)
        except UcError as error:
            self.outcome = f"fault: {error} at {self._reg('rip'):#x}"
            return
        except Refused as error:
            self.outcome = f"fault: {error}"
            return
        if self.outcome != "kernel-entry" and self.last_byte == OP_HLT:
            self.outcome = "halted" if self.entry_registers is None else "kernel-halted"

    def registers(self) -> dict[str, int]:
        return {name: self._reg(name) for name in REGISTERS}


# --- start states ----------------------------------------------------------------------


@functools.cache
def _exception_in_flight_offset() -> int:
    """Where a Unicorn CPU context (uc_context's data: QEMU's CPUX86State up to
    end_reset_fields) holds old_exception, found by its place in the struct: after
    dr[8] and four breakpoint pointers (qemu/target/i386/cpu.h). The debug registers
    are written with marks to find them; old_exception is -1 after reset."""
    import ctypes

    from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
    from unicorn.x86_const import UC_X86_REG_DR0

    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    marks = [DEBUG_REGISTER_MARK + n for n in range(DEBUG_REGISTERS)]
    for n, mark in enumerate(marks):
        uc.reg_write(UC_X86_REG_DR0 + n, mark)
    context = uc.context_save()
    blob = ctypes.string_at(context.context.value, context.size)
    found = blob.find(b"".join(mark.to_bytes(8, "little") for mark in marks))
    offset = found + DEBUG_REGISTERS * 8 + BREAKPOINT_POINTERS * ctypes.sizeof(ctypes.c_void_p)
    if found < 0 or blob[offset : offset + 4] != NO_EXCEPTION:
        raise Refused("this Unicorn's CPU context has no old_exception where QEMU's has it")
    return offset


def _set_32bit_flat(machine: Machine) -> None:
    """Leave the long mode a Unicorn UC_MODE_64 engine starts in (CR0 written with PG,
    then without it, clears EFER.LMA), then load flat 32-bit selectors."""
    machine._set("cr0", 0x80000011)
    machine._set("cr0", abi.CR0_PE | 0x10)
    machine.uc.reg_write(_reg_const("MSR"), (abi.MSR_EFER, 0))
    machine._set("cr4", 0)
    machine.uc.reg_write(_reg_const("GDTR"), (0, EMU_GDT, EMU_GDT_LIMIT, 0))
    machine._set("cs", EMU_SEL_CODE32)
    for name in ("ds", "es", "ss", "fs", "gs"):
        machine._set(name, EMU_SEL_DATA)


def _reg_const(name: str) -> int:
    from unicorn import x86_const

    return getattr(x86_const, f"UC_X86_REG_{name}")


def _place_pvh_info(machine: Machine, state: StartState) -> int:
    """hvm_start_info, cmdline, module and memory map after the image, as Xen does."""
    version = state.hvm_version
    record = hvm_start_info(version)
    info_at = machine.alloc(abi.PAGE_SIZE) if state.info_at is None else state.info_at
    cmdline_at = _place_cmdline(machine, state)
    module_at = machine.alloc(len(MODULE_BYTES))
    machine.uc.mem_write(module_at, MODULE_BYTES)
    modlist_at = machine.alloc(HVM_MODLIST_ENTRY.size)
    machine.uc.mem_write(
        modlist_at,
        HVM_MODLIST_ENTRY.build(
            {"paddr": module_at, "size": len(MODULE_BYTES), "cmdline_paddr": 0, "reserved": 0}
        ),
    )
    values = {
        "magic": 0 if state.bad_magic else HVM_START_MAGIC,
        "version": version,
        "flags": state.flags,
        "nr_modules": 1,
        "modlist_paddr": modlist_at,
        "cmdline_paddr": cmdline_at,
        "rsdp_paddr": 0,
    }
    if version >= 1:
        entries = machine.memory_map()
        memmap_at = machine.alloc(HVM_MEMMAP_TABLE_ENTRY.size * len(entries))
        raw = b"".join(
            HVM_MEMMAP_TABLE_ENTRY.build({"addr": a, "size": s, "type": t, "reserved": 0})
            for a, s, t in entries
        )
        machine.uc.mem_write(memmap_at, raw)
        values |= {"memmap_paddr": memmap_at, "memmap_entries": len(entries), "reserved": 0}
    raw = record.build(values | state.hvm_fields)
    machine.write_anywhere(info_at, raw)
    for paddr, data in state.memory.items():
        machine.write_anywhere(paddr, data)
    machine.loader.update(
        hvm_start_info=info_at,
        cmdline=cmdline_at,
        module=module_at,
        module_size=len(MODULE_BYTES),
        nr_pages=machine.ram >> abi.PAGE_SHIFT,
    )
    return info_at


def _place_cmdline(machine: Machine, state: StartState) -> int:
    """Physical address of the command line (0: none), NUL-terminated after the image,
    or (cmdline_unterminated) in the last bytes of RAM with no NUL."""
    if state.cmdline_unterminated:
        at = machine.ram - len(state.cmdline)
        machine.uc.mem_write(at, state.cmdline)
        return at
    if not state.cmdline:
        return 0
    at = machine.alloc(len(state.cmdline) + 1)
    machine.uc.mem_write(at, state.cmdline + b"\0")
    return at


def _start_pvh(machine: Machine) -> int:
    info = _place_pvh_info(machine, machine.state)
    if machine.state.xen:
        machine.map_rings()
    if machine.state.wrong_mode:
        _set_long_mode_identity(machine)
    else:
        _set_32bit_flat(machine)
    _set_loader_registers(machine, rbx=info)
    return machine.meta.pvh_entry


def _set_loader_registers(machine: Machine, **defined: int) -> None:
    """PVH_LOADER_REGISTERS in what a 32-bit entry's loader leaves unspecified, the
    registers it does define on top; recorded as what the loader passed."""
    registers = PVH_LOADER_REGISTERS | defined
    for name, value in registers.items():
        machine._set(name, value)
    machine.loader["registers"] = registers


def _set_long_mode_identity(machine: Machine) -> None:
    """Long mode, CPL 0, RAM identity mapped: a loader that wrongly enters a 32-bit
    entry the way it would enter a 64-bit one."""
    tables = pt.build([pt.Region(0, 0, machine.ram)], machine.free)
    machine.uc.mem_write(machine.alloc(len(tables.data)), tables.data)
    _set_long_mode(machine, tables.cr3)


def _set_long_mode(machine: Machine, cr3: int) -> None:
    machine.cr3 = cr3
    machine._set("cr3", cr3)
    machine._set("cr4", abi.CR4_PAE)
    machine.uc.reg_write(_reg_const("MSR"), (abi.MSR_EFER, abi.EFER_LME | abi.EFER_LMA))
    machine._set("cr0", abi.CR0_PG | abi.CR0_PE | 0x10)
    machine.uc.reg_write(_reg_const("GDTR"), (0, EMU_GDT, EMU_GDT_LIMIT, 0))


def _start_pv_in_32bit_mode(machine: Machine) -> int:
    """A loader that takes e_entry for a 32-bit entry: flat protected mode, paging
    off, at the physical address of the PV entry."""
    _set_32bit_flat(machine)
    _set_loader_registers(machine)
    meta = machine.meta
    return meta.shim_paddr + (meta.pv_entry - meta.shim_vaddr)


def _start_pv(machine: Machine) -> int:
    """Xen's PV64 state: the kernel mapped at VIRT_BASE, start_info and a stack after it."""
    state, image = machine.state, machine.image
    if not machine.meta.pv_entry:
        raise Refused(
            f"{image.path}: no PV entry (handoff {machine.meta.handoff}): a PV guest starts "
            "in long mode and cannot enter a 32-bit PVH entry"
        )
    if state.wrong_mode:
        return _start_pv_in_32bit_mode(machine)
    delta = machine.meta.shim_vaddr - machine.meta.shim_paddr
    info_at = machine.alloc(abi.PAGE_SIZE)
    stack_at = machine.alloc(abi.PAGE_SIZE)
    module_at = machine.alloc(len(MODULE_BYTES))
    machine.uc.mem_write(module_at, MODULE_BYTES)
    regions = [
        pt.Region(
            (s.vaddr - s.vaddr % abi.PAGE_SIZE) & MASK64,
            s.paddr - s.vaddr % 0x1000,
            round_up(s.memsz + s.vaddr % abi.PAGE_SIZE, abi.PAGE_SIZE),
        )
        for s in image.loadable_segments
    ]
    regions += [
        pt.Region((info_at + delta) & MASK64, info_at, abi.PAGE_SIZE),
        pt.Region((stack_at + delta) & MASK64, stack_at, abi.PAGE_SIZE),
        pt.Region(
            (module_at + delta) & MASK64, module_at, round_up(len(MODULE_BYTES), abi.PAGE_SIZE)
        ),
        pt.Region(0, 0, 0x200000),
    ]  # the loader's own GDT, low memory
    tables_at = machine.free
    tables = pt.build(regions, tables_at)
    machine.uc.mem_write(machine.alloc(len(tables.data)), tables.data)
    record = start_info(64)
    magic = b"" if state.bad_magic else START_INFO_MAGIC[64]
    info = {
        "magic": magic.ljust(32, b"\0"),
        "nr_pages": machine.ram >> abi.PAGE_SHIFT,
        "shared_info": 0,
        "flags": state.flags,
        "store_mfn": 0,
        "store_evtchn": 0,
        "console": {"domU": {"mfn": 0, "evtchn": 0}, "dom0": {"info_off": 0, "info_size": 0}},
        "pt_base": (tables_at + delta) & MASK64,
        "nr_pt_frames": tables.frames,
        "mfn_list": 0,
        "mod_start": (
            module_at >> abi.PAGE_SHIFT
            if state.flags & StartInfoFlags.MOD_START_PFN
            else (module_at + delta) & MASK64
        ),
        "mod_len": len(MODULE_BYTES),
        # cut to the field, NUL-terminated only when shorter: a careless loader could
        # fill cmd_line completely, and the shims must bound what they copy
        "cmd_line": state.cmdline[:MAX_GUEST_CMDLINE].ljust(MAX_GUEST_CMDLINE, b"\0"),
        "first_p2m_pfn": 0,
        "nr_p2m_frames": 0,
    }
    machine.uc.mem_write(info_at, record.build(info))
    hcall = next((int(n.value) for n in image.xen_notes if n.type == XenNote.HYPERCALL_PAGE), None)
    _set_long_mode(machine, tables.cr3)
    if hcall is not None:
        machine.fill_hypercall_page(machine.phys(hcall))
    machine._set("rsi", (info_at + delta) & MASK64)
    machine._set("rsp", (stack_at + abi.PAGE_SIZE + delta) & MASK64)
    machine.loader.update(
        start_info=(info_at + delta) & MASK64,
        rsp=(stack_at + abi.PAGE_SIZE + delta) & MASK64,
        module=module_at,
        module_virt=(module_at + delta) & MASK64,
        module_size=len(MODULE_BYTES),
        nr_pages=machine.ram >> abi.PAGE_SHIFT,
    )
    return machine.meta.pv_entry


REGISTERS = (
    "rip",
    "rsp",
    "rdi",
    "rsi",
    "rdx",
    "rax",
    "rbx",
    "rcx",
    "rbp",
    "rflags",
    "cr0",
    "cr3",
    "cr4",
    *(f"r{n}" for n in range(8, 16)),
    "fs_base",
    "gs_base",
)


def emulate(image: Image, state: StartState, trace: bool = False) -> Result:
    return run_machine(image, state, trace)[1]


def run_machine(image: Image, state: StartState, trace: bool = False) -> tuple[Machine, Result]:
    """The run, and the machine it leaves (its memory and registers, for tests that
    look at what the shim built)."""
    machine = Machine(image, state, trace)
    start = _start_pv(machine) if state.mode == "pv" else _start_pvh(machine)
    machine.run(start)
    registers = machine.registers()
    decoded, raw, hvm = None, b"", None
    handoff = machine.meta.handoff
    entry = machine.entry_registers  # the boot structure is read from these
    if entry is not None and handoff == "start-info":
        record = start_info(64)
        raw = machine.vread(entry["rsi"], record.size)
        decoded = _plain(record.parse(raw))
    elif entry is not None:
        # physical (PV: pseudo-physical, which is where the emulator's RAM holds it)
        pointer = entry["rbx"] if machine.passthrough else entry["rsi"]
        hvm = decode_hvm_start_info(machine.read, pointer)
    boot_mode_var = _boot_mode_var(machine) if entry is not None else None
    return machine, Result(
        mode=state.mode,
        xen=state.xen,
        hvm_version=state.hvm_version,
        outcome=machine.outcome,
        instructions=machine.count,
        kernel_instructions=machine.count - machine.entry_count if entry is not None else 0,
        kernel_entry=machine.kernel_entry,
        registers=registers,
        start_info=decoded,
        start_info_raw=raw,
        debug_output=bytes(machine.debug),
        console_output=bytes(machine.console),
        hypercalls=machine.hypercalls,
        traps=machine.traps,
        trace=machine.trace or [],
        loader=machine.loader,
        reached=machine.reached,
        open_bus=machine.open_bus,
        handoff=handoff,
        hvm_start_info=hvm,
        boot_mode_var=boot_mode_var,
    )


def _boot_mode_var(machine: Machine) -> int | None:
    """The u32 at the kernel's shimgen_boot_mode, read where the loader put it."""
    vaddr = machine.image.symbols.get(abi.BOOT_MODE_SYMBOL)
    for segment in machine.image.loadable_segments:
        if vaddr is not None and segment.vaddr <= vaddr < segment.vaddr + segment.memsz:
            paddr = segment.paddr + vaddr - segment.vaddr
            return int.from_bytes(machine.read(paddr, abi.BOOT_MODE_TYPE.size), "little")
    return None


def decode_hvm_start_info(read: Any, paddr: int) -> dict[str, Any]:
    """The struct at paddr (version 0 or 1) with its command line, module list and
    memory map; read(paddr, size) -> bytes reads physical memory."""
    head = hvm_start_info(0).parse(read(paddr, hvm_start_info(0).size))
    record = hvm_start_info(1 if head.version >= 1 else 0)
    info = _plain(record.parse(read(paddr, record.size)))
    info["cmdline"] = (
        read(info["cmdline_paddr"], MAX_GUEST_CMDLINE).split(b"\0", 1)[0].decode("latin-1")
        if info["cmdline_paddr"]
        else None
    )
    info["modules"] = [
        _plain(
            HVM_MODLIST_ENTRY.parse(
                read(info["modlist_paddr"] + n * HVM_MODLIST_ENTRY.size, HVM_MODLIST_ENTRY.size)
            )
        )
        for n in range(min(info["nr_modules"], MAX_DECODED) if info["modlist_paddr"] else 0)
    ]
    entries = info.get("memmap_entries", 0) if info.get("memmap_paddr") else 0
    size = HVM_MEMMAP_TABLE_ENTRY.size
    info["memmap"] = [
        _plain(HVM_MEMMAP_TABLE_ENTRY.parse(read(info["memmap_paddr"] + n * size, size)))
        for n in range(min(entries, MAX_DECODED))
    ]
    return info


def _plain(container: Any) -> Any:
    """construct Containers to plain dicts; char arrays cut at their first NUL."""
    if isinstance(container, dict):
        return {k: _plain(v) for k, v in container.items() if not k.startswith("_")}
    if isinstance(container, bytes):
        return container.split(b"\0", 1)[0].decode("latin-1")
    return container
