/*
 * The domU rings of a 64-bit sample that takes a start_info_t: Xen's own (PV) or
 * the one the shim synthesized for a PVH boot. See domu.h for where each lives.
 */
#include "start_info_rings.h"

extern char __virt_base[];

/* PV: machine frame -> pfn (the M2P Xen maps read-only for every PV guest) ->
 * the address Xen's initial mapping gives that pfn. NULL when the M2P has no
 * pfn of this guest for the frame. */
static void *pv_frame(uint64_t mfn, uint64_t nr_pages)
{
	const unsigned long *m2p = (const unsigned long *)MACH2PHYS_VIRT_START;
	uint64_t pfn;

	if (!mfn || mfn >= MACH2PHYS_NR_ENTRIES)
		return NULL;
	pfn = m2p[mfn];
	if (pfn >= nr_pages)
		return NULL;
	return __virt_base + (pfn << XEN_PAGE_SHIFT);
}

void domu_rings_from_start_info(struct domu_rings *rings, const start_info_t *si, int pv)
{
	rings->store_mfn = si->store_mfn;
	rings->store_evtchn = si->store_evtchn;
	rings->console_mfn = si->console.domU.mfn;
	rings->console_evtchn = si->console.domU.evtchn;
	if (pv) {
		rings->store = pv_frame(si->store_mfn, si->nr_pages);
		rings->console = pv_frame(si->console.domU.mfn, si->nr_pages);
	} else {
		rings->store = domu_identity_frame(si->store_mfn);
		rings->console = domu_identity_frame(si->console.domU.mfn);
	}
}
