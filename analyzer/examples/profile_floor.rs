//! Decompresses one bundle as `bench_batch`'s floor does (flate2's `MultiGzDecoder`, zlib-rs),
//! for a profiler: the floor's instructions, to compare builds (a profile-guided build must
//! not slow it). `target/release/examples/profile_floor BUNDLE`

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: profile_floor BUNDLE");
    let f = std::io::BufReader::new(std::fs::File::open(&path).expect("bundle"));
    let mut gz = flate2::read::MultiGzDecoder::new(f);
    let bytes = std::io::copy(&mut gz, &mut std::io::sink()).expect("gzip");
    println!("{bytes} bytes of tar");
}
