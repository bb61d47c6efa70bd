fn main() {
    eprintln!("patrol-emulator: not built yet");
    std::process::exit(2);
}
