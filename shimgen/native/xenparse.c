/*
 * xenparse: ask libxenguest (Debian libxen-dev) whether it would load an image.
 *
 *     xenparse pv|hvm IMAGE [XEN_CAPS]
 *
 * Runs the domain builder's own image parser, the one `xl create` uses, without a
 * hypervisor: a dummy xenctrl handle, xc_dom_kernel_file (reads and, if needed,
 * gunzips the file), then xc_dom_parse_image in a PV or an HVM (PVH) container.
 * Prints one JSON object on stdout; see shimgen/xenparser.py for the fields.
 * Exit status: 0 parsed, 1 rejected, 2 usage, 3 the library could not start.
 *
 * Written for shimgen. Two things here lean on libxenguest internals, because its
 * public header keeps them opaque; both are checked at run time, not trusted:
 *  - struct elf_dom_parms (dom->parms) is mirrored for Xen 4.17's layout, measured
 *    on Debian 12. Its numbers are compared with the addresses libelf logs; on any
 *    mismatch the parms are reported as unavailable instead of wrong.
 *  - The loader probes run libelf silently, so when no loader takes the image
 *    libxenguest only says "no loader found". To give libelf's own reason, the
 *    helper repeats the ELF probe (elf_init, elf_parse_binary, elf_xen_parse: all
 *    exported by libxenguest 4.17) with libelf's logging on. struct elf_binary is
 *    private, so it lives in a buffer far larger than the real one.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xen/elfnote.h>
#include <xenctrl.h>
#include <xenguest.h>
#include <xentoollog.h>

#define DEFAULT_CAPS \
    "xen-3.0-x86_64 xen-3.0-x86_32p hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64"

/* ---- libelf entry points exported by libxenguest.so.4.17 (no public header) ---- */

struct elf_binary;
int elf_init(struct elf_binary *elf, const char *image, size_t size);
void elf_parse_binary(struct elf_binary *elf);
int elf_xen_parse(struct elf_binary *elf, void *parms, bool hvm);

/* ---- Xen 4.17's struct elf_dom_parms, as measured (x86_64, Debian 12) ---------- */

#if XEN_ELFNOTE_MAX == 18 && defined(__x86_64__)
#define HAVE_PARMS_LAYOUT 1
struct parms_note {
    int type;
    const char *name;
    uint64_t data;
};

struct parms_4_17 {
    uint64_t guest_info, elf_note_start, elf_note_end;
    struct parms_note notes[XEN_ELFNOTE_MAX + 1];
    char guest_os[16], guest_ver[16], xen_ver[16], loader[16];
    int pae;
    bool bsd_symtab, unmapped_initrd;
    uint64_t virt_base, virt_entry, virt_hypercall, virt_hv_start_low, p2m_base;
    uint64_t elf_paddr_offset;
    uint32_t f_supported[1], f_required[1];
    uint32_t phys_entry;
    uint64_t virt_kstart, virt_kend;
};

/* Offsets read off a parsed image's dom->parms with known note values. */
_Static_assert(offsetof(struct parms_4_17, guest_os) == 0x1e0, "guest_os");
_Static_assert(offsetof(struct parms_4_17, pae) == 0x220, "pae");
_Static_assert(offsetof(struct parms_4_17, virt_base) == 0x228, "virt_base");
_Static_assert(offsetof(struct parms_4_17, phys_entry) == 0x260, "phys_entry");
_Static_assert(sizeof(struct parms_4_17) == 0x278, "size");
#else
#define HAVE_PARMS_LAYOUT 0
#endif

/* Room for libelf's private structs: the real ones are well under 1 KiB. */
#define OPAQUE_BYTES 16384
static _Alignas(64) unsigned char diag_elf[OPAQUE_BYTES];
static _Alignas(64) unsigned char diag_parms[OPAQUE_BYTES];

/* ---- collected log ------------------------------------------------------------- */

struct message {
    const char *phase; /* "load" (xc_dom_*) or "diagnosis" (repeated ELF probe) */
    const char *level;
    const char *context;
    int errnoval;
    char *text;
};

static struct message *messages;
static size_t n_messages, cap_messages;
static const char *phase = "load";

static char *loaders_tried[16];
static size_t n_loaders_tried;
static const char *accepted_loader; /* points into loaders_tried */

static void oom(void)
{
    fputs("xenparse: out of memory\n", stderr);
    exit(3);
}

static char *dup_or_die(const char *text, size_t len)
{
    char *copy = strndup(text, len);
    if (!copy)
        oom();
    return copy;
}

/* The domain builder announces each probe and its outcome: that is the only
 * public trace of which loader took the image (struct xc_dom_loader is opaque). */
static void track_loader(const char *line)
{
    static const char trying[] = "xc_dom_find_loader: trying ";
    const char *name, *end;

    if (strcmp(line, "loader probe OK") == 0 && n_loaders_tried)
        accepted_loader = loaders_tried[n_loaders_tried - 1];
    if (strncmp(line, trying, sizeof(trying) - 1) != 0)
        return;
    name = line + sizeof(trying) - 1;
    end = strstr(name, " loader");
    if (end && n_loaders_tried < sizeof(loaders_tried) / sizeof(loaders_tried[0]))
        loaders_tried[n_loaders_tried++] = dup_or_die(name, (size_t)(end - name));
}

static void add_line(xentoollog_level level, int errnoval, const char *context,
                     const char *line, size_t len)
{
    struct message *m;

    if (n_messages == cap_messages) {
        cap_messages = cap_messages ? 2 * cap_messages : 64;
        messages = realloc(messages, cap_messages * sizeof(*messages));
        if (!messages)
            oom();
    }
    m = &messages[n_messages++];
    m->phase = phase;
    m->level = xtl_level_to_string(level);
    m->context = context ? context : "";
    m->errnoval = errnoval;
    m->text = dup_or_die(line, len);
    track_loader(m->text);
}

/* One call may carry several lines (libelf ends its messages with '\n'). */
static void collect_vmessage(xentoollog_logger *logger, xentoollog_level level,
                             int errnoval, const char *context, const char *format,
                             va_list al)
{
    char *text, *line, *nl;
    (void)logger;

    if (vasprintf(&text, format, al) < 0)
        oom();
    for (line = text; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl) {
            add_line(level, errnoval, context, line, strlen(line));
            break;
        }
        if (nl > line)
            add_line(level, errnoval, context, line, (size_t)(nl - line));
    }
    free(text);
}

static void collect_progress(xentoollog_logger *logger, const char *context,
                             const char *doing_what, int percent, unsigned long done,
                             unsigned long total)
{
    (void)logger, (void)context, (void)doing_what, (void)percent, (void)done, (void)total;
}

static void collect_destroy(xentoollog_logger *logger)
{
    (void)logger;
}

static xentoollog_logger collector = {
    .vmessage = collect_vmessage,
    .progress = collect_progress,
    .destroy = collect_destroy,
};

/* ---- JSON output ----------------------------------------------------------------- */

static void json_string(const char *s, size_t max)
{
    size_t i;

    if (!s) {
        fputs("null", stdout);
        return;
    }
    putchar('"');
    for (i = 0; i < max && s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            printf("\\u%04x", c); /* bytes above ASCII read as Latin-1 */
        else
            putchar(c);
    }
    putchar('"');
}

static void json_key(const char *key, bool *first)
{
    printf("%s\"%s\": ", *first ? "" : ", ", key);
    *first = false;
}

static void json_number_field(const char *key, uint64_t value, bool *first)
{
    json_key(key, first);
    printf("%llu", (unsigned long long)value);
}

static void json_string_field(const char *key, const char *value, size_t max, bool *first)
{
    json_key(key, first);
    json_string(value, max);
}

static void print_messages(void)
{
    size_t i;

    fputs("[", stdout);
    for (i = 0; i < n_messages; i++) {
        bool first = true;
        fputs(i ? ",\n  {" : "\n  {", stdout);
        json_string_field("phase", messages[i].phase, SIZE_MAX, &first);
        json_string_field("level", messages[i].level, SIZE_MAX, &first);
        json_string_field("context", messages[i].context, SIZE_MAX, &first);
        json_key("errno", &first);
        printf("%d", messages[i].errnoval);
        json_string_field("text", messages[i].text, SIZE_MAX, &first);
        fputs("}", stdout);
    }
    fputs("]", stdout);
}

static void print_loaders(void)
{
    size_t i;

    fputs("[", stdout);
    for (i = 0; i < n_loaders_tried; i++) {
        fputs(i ? ", " : "", stdout);
        json_string(loaders_tried[i], SIZE_MAX);
    }
    fputs("]", stdout);
}

/* ---- parms ------------------------------------------------------------------------ */

/* The last value libelf logged as "    NAME = 0x..." in the given phase. */
static bool logged_address(const char *want_phase, const char *name, uint64_t *value)
{
    size_t i, len = strlen(name);
    bool found = false;

    for (i = 0; i < n_messages; i++) {
        const char *t = messages[i].text;
        if (strcmp(messages[i].phase, want_phase) != 0)
            continue;
        while (*t == ' ')
            t++;
        if (strncmp(t, name, len) != 0 || t[len] != ' ')
            continue;
        t = strchr(t, '=');
        if (t && sscanf(t + 1, " %" SCNx64, value) == 1)
            found = true;
    }
    return found;
}

#if HAVE_PARMS_LAYOUT
static bool terminated(const char *s, size_t max)
{
    return memchr(s, '\0', max) != NULL;
}

/* Trust the mirrored layout only when it agrees with what libelf printed. */
static const char *parms_mismatch(const struct parms_4_17 *p, const char *from)
{
    struct {
        const char *name;
        uint64_t value;
    } checks[] = {
        {"virt_base", p->virt_base},       {"elf_paddr_offset", p->elf_paddr_offset},
        {"virt_kstart", p->virt_kstart},   {"virt_kend", p->virt_kend},
        {"virt_entry", p->virt_entry},     {"p2m_base", p->p2m_base},
    };
    size_t i;
    uint64_t logged;

    if (!terminated(p->guest_os, 16) || !terminated(p->guest_ver, 16) ||
        !terminated(p->xen_ver, 16) || !terminated(p->loader, 16))
        return "string fields not NUL-terminated";
    if (!logged_address(from, "virt_kend", &logged))
        return "libelf logged no addresses to check the layout against";
    for (i = 0; i < sizeof(checks) / sizeof(checks[0]); i++)
        if (!logged_address(from, checks[i].name, &logged) || logged != checks[i].value)
            return "values differ from libelf's log: layout is not Xen 4.17's";
    return NULL;
}

static void print_parms(const void *raw, const char *from)
{
    const struct parms_4_17 *p = raw;
    const char *why = parms_mismatch(p, from);
    bool first = true;

    if (why) {
        printf("null, \"parms_error\": ");
        json_string(why, SIZE_MAX);
        return;
    }
    putchar('{');
    json_string_field("guest_os", p->guest_os, 16, &first);
    json_string_field("guest_ver", p->guest_ver, 16, &first);
    json_string_field("xen_ver", p->xen_ver, 16, &first);
    json_string_field("loader", p->loader, 16, &first);
    json_number_field("pae", (uint64_t)p->pae, &first);
    json_number_field("bsd_symtab", p->bsd_symtab, &first);
    json_number_field("virt_base", p->virt_base, &first);
    json_number_field("virt_entry", p->virt_entry, &first);
    json_number_field("virt_hypercall", p->virt_hypercall, &first);
    json_number_field("virt_hv_start_low", p->virt_hv_start_low, &first);
    json_number_field("p2m_base", p->p2m_base, &first);
    json_number_field("elf_paddr_offset", p->elf_paddr_offset, &first);
    json_number_field("f_supported", p->f_supported[0], &first);
    json_number_field("f_required", p->f_required[0], &first);
    json_number_field("phys_entry", p->phys_entry, &first);
    json_number_field("virt_kstart", p->virt_kstart, &first);
    json_number_field("virt_kend", p->virt_kend, &first);
    putchar('}');
}
#else
static void print_parms(const void *raw, const char *from)
{
    (void)raw, (void)from;
    printf("null, \"parms_error\": \"no known elf_dom_parms layout for this Xen\"");
}
#endif

/* ---- the parse ------------------------------------------------------------------ */

static bool phase_logged(const char *want_phase, const char *prefix)
{
    size_t i, len = strlen(prefix);

    for (i = 0; i < n_messages; i++)
        if (strcmp(messages[i].phase, want_phase) == 0 &&
            strncmp(messages[i].text, prefix, len) == 0)
            return true;
    return false;
}

/* Repeat the ELF-generic probe with libelf's messages on (see the top comment). */
static void diagnose(xc_interface *xch, struct xc_dom_image *dom, bool hvm)
{
    struct elf_binary *elf = (struct elf_binary *)diag_elf;

    phase = "diagnosis";
    if (elf_init(elf, dom->kernel_blob, dom->kernel_size) != 0) {
        static const char why[] = "elf_init failed: not an ELF image";
        add_line(XTL_ERROR, -1, "xenparse", why, sizeof(why) - 1);
        return;
    }
    xc_elf_set_logfile(xch, elf, 1);
    elf_parse_binary(elf);
    elf_xen_parse(elf, diag_parms, hvm);
}

static int usage(void)
{
    fputs("usage: xenparse pv|hvm IMAGE [XEN_CAPS]\n", stderr);
    return 2;
}

int main(int argc, char **argv)
{
    struct xc_dom_image *dom;
    xc_interface *xch;
    const char *caps = argc > 3 ? argv[3] : DEFAULT_CAPS;
    const void *parms = NULL;
    const char *parms_from = NULL;
    bool hvm, elf_parsed, first = true;
    int file_rc, parse_rc = -1;

    if (argc < 3 || argc > 4 || (strcmp(argv[1], "pv") && strcmp(argv[1], "hvm")))
        return usage();
    hvm = strcmp(argv[1], "hvm") == 0;
    if (strlen(caps) >= sizeof(dom->xen_caps))
        return usage();

    /* The same logger takes the error stream and the domain builder's chatter. */
    xch = xc_interface_open(&collector, &collector, XC_OPENFLAG_DUMMY);
    if (!xch) {
        fputs("xenparse: xc_interface_open(XC_OPENFLAG_DUMMY) failed\n", stderr);
        return 3;
    }
    dom = xc_dom_allocate(xch, NULL, NULL);
    if (!dom) {
        fputs("xenparse: xc_dom_allocate failed\n", stderr);
        return 3;
    }
    dom->container_type = hvm ? XC_DOM_HVM_CONTAINER : XC_DOM_PV_CONTAINER;
    strcpy(dom->xen_caps, caps);

    file_rc = xc_dom_kernel_file(dom, argv[2]);
    if (file_rc == 0)
        parse_rc = xc_dom_parse_image(dom);

    /* The ELF loader's parser logs libelf verbosely; otherwise ask libelf why. */
    elf_parsed = phase_logged("load", "ELF: ");
    if (elf_parsed && dom->parms) {
        parms = dom->parms;
        parms_from = "load";
    } else if (file_rc == 0 && parse_rc != 0 && dom->kernel_blob) {
        diagnose(xch, dom, hvm);
        if (phase_logged("diagnosis", "ELF: ")) {
            parms = diag_parms;
            parms_from = "diagnosis";
        }
    }

    putchar('{');
    json_number_field("format", 1, &first);
    json_string_field("container", hvm ? "hvm" : "pv", SIZE_MAX, &first);
    json_string_field("xen_caps", caps, SIZE_MAX, &first);
    json_key("kernel_file_rc", &first);
    printf("%d", file_rc);
    json_key("parse_rc", &first);
    printf("%d", parse_rc);
    json_key("ok", &first);
    fputs(file_rc == 0 && parse_rc == 0 ? "true" : "false", stdout);
    json_string_field("guest_type", dom->guest_type, SIZE_MAX, &first);
    json_key("loaders_tried", &first);
    print_loaders();
    json_string_field("loader", accepted_loader, SIZE_MAX, &first);
    json_string_field("parms_from", parms_from, SIZE_MAX, &first);
    json_key("parms", &first);
    if (parms)
        print_parms(parms, parms_from);
    else
        fputs("null", stdout);
    json_key("messages", &first);
    print_messages();
    puts("}");

    xc_dom_release(dom);
    xc_interface_close(xch);
    return file_rc == 0 && parse_rc == 0 ? 0 : 1;
}
