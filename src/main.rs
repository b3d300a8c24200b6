fn main() {
    std::process::exit(fourtuple_apps::main_entry());
}
