use sim::{run, Scenario};

#[test]
fn quick_default() {
    let s = Scenario { rounds: 10, ..Scenario::default() };
    let start = std::time::Instant::now();
    match run(&s, 1) {
        Ok(summary) => println!("{summary:#?}"),
        Err(e) => panic!("{e}"),
    }
    println!("wall {:?}", start.elapsed());
}
