//! Two tasks on one worker that switch to each other as fast as they can, for the test
//! that single-steps a worker through every instruction of the context switch and
//! unwinds at each one. Prints `READY <pid>`; exits when stdin closes.

use std::hint::black_box;
use std::io::Read;

#[inline(never)]
fn yielder(n: u64) {
    let mut i = 0u64;
    loop {
        i = black_box(i.wrapping_add(n));
        target_runtime::yield_now();
    }
}

fn main() {
    std::thread::spawn(|| {
        let mut buf = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut buf);
        std::process::exit(0);
    });
    target_runtime::Builder::new()
        .workers(1)
        .run(|| {
            target_runtime::spawn(|| yielder(1));
            target_runtime::spawn(|| yielder(2));
            while target_runtime::__private::control().is_none() {}
            println!("READY {}", std::process::id());
            yielder(3);
        })
        .unwrap();
}
