/*
 * C frames for the unwinder tests: compiled with -O2 -fomit-frame-pointer by build.rs,
 * so a task's stack holds frames that only DWARF CFI can walk (the cgo case). Nothing
 * in the runtime calls this; fixtures reach it through target_runtime::__private.
 */
typedef void (*gprof_rt_c_callback)(void *arg);

__attribute__((noinline)) long gprof_rt_c_middle(gprof_rt_c_callback cb, void *arg, long depth)
{
    /* Locals that live across the call, so the frame has a real size and no tail call. */
    volatile long pad[4] = {depth, depth + 1, depth + 2, depth + 3};
    long r;
    if (depth > 0) {
        r = gprof_rt_c_middle(cb, arg, depth - 1);
    } else {
        cb(arg);
        r = 0;
    }
    return r + pad[1] + pad[3];
}
