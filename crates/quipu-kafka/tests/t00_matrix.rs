//! `docs/protocol/kafka.md`'s compatibility matrix is generated from the handler table: this test
//! fails when the two differ, and `QUIPU_BLESS=1` rewrites the table in the document.
#![allow(clippy::unwrap_used)] // tests unwrap

const BEGIN: &str = "<!-- matrix: generated from quipu_kafka::supported_apis(); QUIPU_BLESS=1 cargo test -p quipu-kafka --test t00_matrix -->";
const END: &str = "<!-- end of matrix -->";

fn matrix() -> String {
    let mut table = String::from("| API (key) | versions | notes |\n|---|---|---|\n");
    for api in quipu_kafka::supported_apis() {
        table.push_str(&format!(
            "| {:?} ({}) | {}–{} | {} |\n",
            api.key, api.key as i16, api.min, api.max, api.note
        ));
    }
    table
}

#[test]
fn the_compatibility_matrix_matches_the_handler_table() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol/kafka.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc.find(BEGIN).expect("the matrix's begin marker") + BEGIN.len();
    let end = doc.find(END).expect("the matrix's end marker");
    let wanted = format!("\n{}", matrix());
    if std::env::var_os("QUIPU_BLESS").is_some() {
        let updated = format!("{}{wanted}{}", &doc[..start], &doc[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert_eq!(
        doc[start..end],
        wanted,
        "docs/protocol/kafka.md is stale: run QUIPU_BLESS=1 cargo test -p quipu-kafka --test t00_matrix"
    );
}
