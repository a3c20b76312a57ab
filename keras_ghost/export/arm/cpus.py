"""The emulated ARM cores: QEMU's name, what the guest's /proc/cpuinfo must say for LiteRT's
CPU detection to pick the kernels that core has, and the MACs of its widest instructions."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class ArmCpu:
    name: str  # what --arm takes
    qemu_cpu: str  # QEMU's -cpu value
    implementer: int  # MIDR fields, as /proc/cpuinfo prints them
    variant: int
    part: int
    revision: int
    features: str  # /proc/cpuinfo "Features" (Linux hwcap names)
    dot: bool  # SDOT/UDOT (ARMv8.2 dot product)
    i8mm: bool  # SMMLA/UMMLA (ARMv8.6 int8 matrix multiply)
    description: str

    @property
    def int8_macs_per_instruction(self):
        """int8 MACs of the widest int8 multiply-accumulate: SMMLA 32 (2x8 by 8x2), SDOT 16
        (4 lanes of 4), plain NEON SMLAL 8 (8 lanes of int8 x int8 -> int16)."""
        return 32 if self.i8mm else 16 if self.dot else 8

    @property
    def fp32_macs_per_instruction(self):
        return 4  # FMLA on 4 float32 lanes

    def cpuinfo(self):
        return (f"processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: {self.features}\n"
                f"CPU implementer\t: 0x{self.implementer:02x}\nCPU architecture: 8\n"
                f"CPU variant\t: 0x{self.variant:x}\nCPU part\t: 0x{self.part:03x}\n"
                f"CPU revision\t: {self.revision}\n\n")


_V80 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
_V82 = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
        "dcpop asimddp")

CPUS = {c.name: c for c in (
    ArmCpu("cortex-a53", "cortex-a53", 0x41, 0x0, 0xd03, 4, _V80, False, False,
           "ARMv8.0 little core, no dot product"),
    ArmCpu("cortex-a72", "cortex-a72", 0x41, 0x0, 0xd08, 3, _V80, False, False,
           "ARMv8.0 big core, no dot product"),
    ArmCpu("cortex-a76", "cortex-a76", 0x41, 0x4, 0xd0b, 1, _V82, True, False,
           "ARMv8.2 big core with dot product"),
    ArmCpu("neoverse-n1", "neoverse-n1", 0x41, 0x4, 0xd0c, 1, _V82 + " ssbs", True, False,
           "ARMv8.2 server core with dot product"),
    # QEMU's `max` reports implementer 0 ("software"), part 'Q'. Its SME is emulated wrongly
    # by QEMU 7.2 (int8 XNNPACK outputs garbage), hence sme=off: the i8mm core.
    ArmCpu("max,sme=off", "max,sme=off", 0x00, 0x0, 0x051, 0,
           _V82 + " sha3 sm3 sm4 sha512 sve asimdfhm dit uscat ilrcpc flagm sb paca pacg dcpodp"
           " sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svebf16 i8mm"
           " bf16 bti", True, True, "every feature QEMU emulates but SME: dot product, i8mm, SVE2"),
)}


def check_names(names):
    """Raises ValueError naming the first unknown core (what --arm takes)."""
    unknown = [n for n in names if n not in CPUS]
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown core; choose from {', '.join(CPUS)}")


def get_cpu(name):
    try:
        return CPUS[name]
    except KeyError:
        raise ValueError(f"unknown ARM CPU {name!r}; choose from {', '.join(CPUS)}.") from None
