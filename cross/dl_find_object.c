/* _dl_find_object for the aarch64 musl build's test binaries (cross/build.sh).
 *
 * GCC 12's unwinder (libgcc_eh, standing in for libunwind.a) finds a frame's unwind
 * tables through glibc 2.35's _dl_find_object, which musl does not have. Only
 * unwinding needs it: the release binary (panic = "abort") never references it and
 * links without it; the test binaries (panic = "unwind", so that a failing test is
 * reported and the run goes on) do. This answers from the program headers, as
 * glibc does for the main program: the PT_GNU_EH_FRAME of the object whose PT_LOAD
 * holds pc. Not part of any default build. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stddef.h>

/* struct dl_find_object and the prototype: glibc's <dlfcn.h>, through <link.h>
 * (the cross gcc's headers; musl's lack them, and the layout is glibc's). */

struct query {
	ElfW(Addr) pc;
	struct dl_find_object *out;
	int found;
};

static int visit(struct dl_phdr_info *info, size_t size, void *data)
{
	struct query *q = data;
	void *eh_frame = NULL;
	int holds_pc = 0;
	(void)size;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *p = &info->dlpi_phdr[i];
		ElfW(Addr) start = info->dlpi_addr + p->p_vaddr;
		if (p->p_type == PT_LOAD && q->pc >= start && q->pc < start + p->p_memsz) {
			holds_pc = 1;
			q->out->dlfo_map_start = (void *)start;
			q->out->dlfo_map_end = (void *)(start + p->p_memsz);
		}
		if (p->p_type == PT_GNU_EH_FRAME)
			eh_frame = (void *)start;
	}
	if (!holds_pc)
		return 0;
	q->out->dlfo_flags = 0;
	q->out->dlfo_link_map = NULL;
	q->out->dlfo_eh_frame = eh_frame;
	q->found = 1;
	return 1;
}

int _dl_find_object(void *pc, struct dl_find_object *out)
{
	struct query q = { (ElfW(Addr))pc, out, 0 };
	dl_iterate_phdr(visit, &q);
	return q.found ? 0 : -1;
}
