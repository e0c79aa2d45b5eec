/*
 * What a sample does as a domU (a guest `xl create` started, not dom0): find the
 * console and xenstore rings its toolstack set up, print through the console ring
 * (a release-build Xen refuses console_io to a domU), and read its own name from
 * xenstore.
 *
 * Where the rings are, by how the sample was booted:
 *   - Xen PV: start_info's store_mfn and console.domU.mfn are machine frames; the
 *     read-only machine-to-phys table at MACH2PHYS_VIRT_START turns each into the
 *     guest's pfn, which Xen's initial mapping puts at VIRT_BASE + (pfn << 12)
 *     (start_info_rings.c, 64-bit samples only);
 *   - PVH: the frames are guest frames (gfns, from HVM params, or from the
 *     start_info the shim synthesized out of them), below 4 GiB, and reached at
 *     gfn << 12: paging off (pvh-hello), or the shim's identity map of the low
 *     4 GiB (the patched 64-bit samples).
 */
#ifndef DOMU_H
#define DOMU_H

#include <stdint.h>

#include "xencons.h"
#include "xenstore.h"

struct domu_rings {
	/* As the guest got them: PV machine frames, PVH guest frames (0: none). */
	uint64_t store_mfn, console_mfn;
	uint32_t store_evtchn, console_evtchn;
	/* Where this kernel reaches each ring; NULL when it cannot. */
	struct xenstore_domain_interface *store;
	struct xencons_interface *console;
};

/* PVH: HVMOP_get_param for the four values (0 for one Xen refused), rings at
 * gfn << 12. */
void domu_rings_from_hvm_params(struct domu_rings *rings);
/* The address of a guest frame below 4 GiB under an identity map; NULL above. */
void *domu_identity_frame(uint64_t gfn);
/* Report lines go to the console ring (when there is one) and to `also`. */
void domu_use_console(const struct domu_rings *rings, unsigned also);
/* Report the frames and ports: store_mfn, store_evtchn, console_mfn,
 * console_evtchn (a sample whose start_info report has them skips this). */
void domu_report_frames(const struct domu_rings *rings);
/* Report where each ring is reached (store_ring, console_ring) and
 * xenstore_name, the domain's `name` read over the store ring. Returns 0 when a
 * ring is missing or the name could not be read (reported as error). */
int domu_report(const struct domu_rings *rings);
/* The end of a domU: let xenconsoled take the report's tail, then
 * SCHEDOP_shutdown (poweroff when ok, else crash). A domU never writes the
 * isa-debug-exit port: that device belongs to the QEMU Xen runs in, and only dom0
 * may reach it. */
void domu_shutdown(int ok) __attribute__((noreturn));

#endif
