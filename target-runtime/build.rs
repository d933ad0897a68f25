//! Builds the C unwinding fixture (csrc/nofp.c) without frame pointers.
fn main() {
    println!("cargo:rerun-if-changed=csrc/nofp.c");
    cc::Build::new()
        .file("csrc/nofp.c")
        .opt_level(2)
        .flag("-fomit-frame-pointer")
        .flag("-fasynchronous-unwind-tables")
        .compile("gprof_rt_cfixture");
}
