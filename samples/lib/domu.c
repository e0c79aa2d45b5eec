/* The domU side of every sample; see domu.h. */
#include "domu.h"
#include "sample.h"
#include <xen/hvm/hvm_op.h>
#include <xen/hvm/params.h>
#include <xen/io/ring.h>
#include <xen/sched.h>

/* The longest `name` kept: xl's names are short; a longer one is cut, not refused. */
#define NAME_MAX_BYTES 128

static uint64_t hvm_param(uint32_t index)
{
	struct xen_hvm_param param = { .domid = DOMID_SELF, .index = index };

	if (hypercall2(__HYPERVISOR_hvm_op, HVMOP_get_param, (unsigned long)&param))
		return 0;
	return param.value;
}

void *domu_identity_frame(uint64_t gfn)
{
	/* Identity mapped below 4 GiB only; 0 means the toolstack gave none. */
	if (!gfn || gfn >= (1ull << (32 - XEN_PAGE_SHIFT)))
		return NULL;
	return (void *)(uintptr_t)(gfn << XEN_PAGE_SHIFT);
}

void domu_rings_from_hvm_params(struct domu_rings *rings)
{
	rings->store_mfn = hvm_param(HVM_PARAM_STORE_PFN);
	rings->store_evtchn = (uint32_t)hvm_param(HVM_PARAM_STORE_EVTCHN);
	rings->console_mfn = hvm_param(HVM_PARAM_CONSOLE_PFN);
	rings->console_evtchn = (uint32_t)hvm_param(HVM_PARAM_CONSOLE_EVTCHN);
	rings->store = domu_identity_frame(rings->store_mfn);
	rings->console = domu_identity_frame(rings->console_mfn);
}

void domu_use_console(const struct domu_rings *rings, unsigned also)
{
	if (rings->console) {
		xencons_attach(rings->console, rings->console_evtchn);
		also |= SINK_RING;
	}
	out_set_sinks(also);
}

void domu_report_frames(const struct domu_rings *rings)
{
	report_hex("store_mfn", rings->store_mfn);
	report_dec("store_evtchn", rings->store_evtchn);
	report_hex("console_mfn", rings->console_mfn);
	report_dec("console_evtchn", rings->console_evtchn);
}

int domu_report(const struct domu_rings *rings)
{
	static char name[NAME_MAX_BYTES + 1];
	int error;

	report_hex("store_ring", (uintptr_t)rings->store);
	report_hex("console_ring", (uintptr_t)rings->console);
	if (!rings->console) /* nothing of this report reaches xenconsoled: crash to say so */
		report_str("error", "no console ring");
	if (!rings->store) {
		report_str("error", "no xenstore ring to read the domain's name from");
		return 0;
	}
	error = xenstore_read(rings->store, rings->store_evtchn, "name", name, sizeof(name));
	if (error) {
		report_str("xenstore_error", xenstore_error_name(error));
		if (error == XENSTORE_EREPLY)
			report_str("xenstore_reply", name);
		report_str("error", "xenstore read of name failed");
		return 0;
	}
	report_str("xenstore_name", name);
	return rings->console != NULL;
}

void domu_shutdown(int ok)
{
	struct sched_shutdown shutdown = { .reason = ok ? SHUTDOWN_poweroff : SHUTDOWN_crash };

	xencons_drain();
	hypercall2(__HYPERVISOR_sched_op, SCHEDOP_shutdown, (unsigned long)&shutdown);
	sample_hang();
}
