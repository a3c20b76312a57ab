/*
 * QEMU TCG plugin: counts guest aarch64 instructions, split by class, between markers
 * the guest sets with lseek(-1, KG_MAGIC | op << 32 | region, 0) (fails with EBADF, so
 * the guest is otherwise undisturbed).
 *
 *   op 1: start region; op 2: stop region and write its counts to out=FILE;
 *   op 3: the third argument is a guest address whose block starts a new segment.
 *   blocks=R: also write, for region R, each translated block that ran in it (guest
 *   address, executions, instructions per class), for attribution to symbols, split into
 *   segments at each execution of the op-3 address (e.g. once per XNNPACK operator).
 *   harness=LO:HI (hex guest addresses): blocks there (the Python interpreter's own code,
 *   whose bookkeeping varies by a few hundred instructions from call to call) are counted
 *   apart, as "harness", and left out of the classes and the total.
 *
 * Counting is inline (no callback per block), so it is exact and repeatable for a
 * single-threaded guest. Built against Debian's include/qemu/qemu-plugin.h.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define KG_MAGIC 0x4B47000000000000ULL
#define KG_MAGIC_MASK 0xFFFF000000000000ULL
#define SYS_LSEEK_AARCH64 62

enum { SCALAR, SIMD, DOT, I8MM, SVE, NCLASS };
static const char *class_names[NCLASS] = {"scalar", "simd", "dot", "i8mm", "sve"};

typedef struct {
    uint64_t vaddr;
    uint32_t n[NCLASS];
    uint64_t execs;
    uint64_t base;  /* execs when the current segment began */
} Block;

static uint64_t counts[NCLASS + 1];  /* the last one: harness */
static uint64_t region_base[NCLASS + 1];
static uint64_t harness_lo, harness_hi;
static Block **blocks;
static size_t n_blocks, cap_blocks;
static int per_block;
static uint64_t block_region;
static uint64_t split_addr;
static int in_block_region;
static uint64_t segment;
static FILE *out;

/* Arm ARM encodings: SDOT/UDOT (vector, by element); SMMLA/UMMLA/USMMLA, USDOT/SUDOT;
 * the top-level groups for SIMD&FP data processing, SIMD&FP loads/stores, SVE and SME. */
static int classify(uint32_t i)
{
    if ((i & 0x9FE0FC00u) == 0x0E809400u || (i & 0x9FC0F400u) == 0x0F80E000u) {
        return DOT;
    }
    if ((i & 0xFFE0FC00u) == 0x4E80A400u || (i & 0xFFE0FC00u) == 0x6E80A400u ||
        (i & 0xFFE0FC00u) == 0x4E80AC00u || (i & 0xBFE0FC00u) == 0x0E809C00u ||
        (i & 0xBFC0F400u) == 0x0F80F000u || (i & 0xBFC0F400u) == 0x0F00F000u) {
        return I8MM;
    }
    uint32_t op0 = (i >> 25) & 0xF;
    if (op0 == 0x2 || (op0 == 0x0 && (i >> 31))) {
        return SVE;
    }
    if ((op0 & 0x7) == 0x7) {
        return SIMD;
    }
    if ((op0 & 0x5) == 0x4 && (i >> 26 & 1)) {
        return SIMD;
    }
    return SCALAR;
}

/* Writes the blocks that ran since the segment began, and begins the next one. */
static void flush_segment(void)
{
    for (size_t k = 0; k < n_blocks; k++) {
        Block *b = blocks[k];
        uint64_t runs = b->execs - b->base;
        if (runs) {
            fprintf(out, "block %" PRIu64 " %" PRIu64 " 0x%" PRIx64 " %" PRIu64, block_region,
                    segment, b->vaddr, runs);
            for (int c = 0; c < NCLASS; c++) {
                fprintf(out, " %u", b->n[c]);
            }
            fputc('\n', out);
            b->base = b->execs;
        }
    }
    segment++;
}

static void on_split(unsigned int vcpu, void *udata)
{
    if (in_block_region) {
        flush_segment();
    }
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    uint32_t c[NCLASS] = {0};
    for (size_t k = 0; k < n; k++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, k);
        uint32_t word = 0;
        if (qemu_plugin_insn_size(insn) == 4) {
            memcpy(&word, qemu_plugin_insn_data(insn), 4);
        }
        c[classify(word)]++;
    }
    uint64_t vaddr = qemu_plugin_tb_vaddr(tb);
    if (vaddr >= harness_lo && vaddr < harness_hi) {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                                 &counts[NCLASS], n);
        return;
    }
    for (int k = 0; k < NCLASS; k++) {
        if (c[k]) {
            qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                                     &counts[k], c[k]);
        }
    }
    if (per_block) {
        Block *b = calloc(1, sizeof(Block));
        if (!b) {
            abort();
        }
        b->vaddr = vaddr;
        memcpy(b->n, c, sizeof(c));
        if (n_blocks == cap_blocks) {
            cap_blocks = cap_blocks ? 2 * cap_blocks : 65536;
            blocks = realloc(blocks, cap_blocks * sizeof(Block *));
            if (!blocks) {
                abort();
            }
        }
        blocks[n_blocks++] = b;
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->execs, 1);
    }
    if (split_addr && vaddr == split_addr) {
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_split, QEMU_PLUGIN_CB_NO_REGS, NULL);
    }
}

static void start_region(uint64_t region)
{
    memcpy(region_base, counts, sizeof(counts));
    for (size_t k = 0; k < n_blocks; k++) {
        blocks[k]->base = blocks[k]->execs;
    }
    in_block_region = per_block && region == block_region;
    segment = 0;
}

static void stop_region(uint64_t region)
{
    uint64_t total = 0;
    fprintf(out, "region %" PRIu64, region);
    for (int k = 0; k < NCLASS; k++) {
        uint64_t d = counts[k] - region_base[k];
        total += d;
        fprintf(out, " %s=%" PRIu64, class_names[k], d);
    }
    fprintf(out, " total=%" PRIu64 " harness=%" PRIu64 "\n", total,
            counts[NCLASS] - region_base[NCLASS]);
    if (in_block_region) {
        flush_segment();
        in_block_region = 0;
    }
    fflush(out);
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    if (num != SYS_LSEEK_AARCH64 || a1 != UINT64_MAX || (a2 & KG_MAGIC_MASK) != KG_MAGIC) {
        return;
    }
    uint64_t op = (a2 >> 32) & 0xFFFF, region = a2 & 0xFFFFFFFFu;
    if (op == 1) {
        start_region(region);
    } else if (op == 2) {
        stop_region(region);
    } else if (op == 3) {
        split_addr = a3;
    }
}

static void at_exit(qemu_plugin_id_t id, void *p)
{
    if (out) {
        fclose(out);
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    const char *path = NULL;
    for (int k = 0; k < argc; k++) {
        if (strncmp(argv[k], "out=", 4) == 0) {
            path = argv[k] + 4;
        } else if (strncmp(argv[k], "blocks=", 7) == 0) {
            per_block = 1;
            block_region = strtoull(argv[k] + 7, NULL, 10);
        } else if (strncmp(argv[k], "harness=", 8) == 0) {
            char *end;
            harness_lo = strtoull(argv[k] + 8, &end, 16);
            harness_hi = *end == ':' ? strtoull(end + 1, NULL, 16) : 0;
        } else {
            fprintf(stderr, "counting plugin: unknown argument %s\n", argv[k]);
            return -1;
        }
    }
    if (!path) {
        fprintf(stderr, "counting plugin: needs out=FILE\n");
        return -1;
    }
    out = fopen(path, "w");
    if (!out) {
        perror(path);
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
