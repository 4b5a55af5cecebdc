//! The JSON → Avro transcoder against the catalog's schemas, on arbitrary
//! JSON: must never panic, and whatever it returns must encode under the
//! schema (the transcoder never produces a value that does not fit).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn transcoders() -> &'static Vec<schemas::transcode::Transcoder> {
    static ALL: OnceLock<Vec<schemas::transcode::Transcoder>> = OnceLock::new();
    ALL.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/catalog");
        let catalog = schemas::catalog::Catalog::load(&root).expect("catalog");
        catalog
            .events()
            .flat_map(|e| e.versions.iter().map(|v| schemas::transcode::Transcoder::new(v.payload.clone())))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    for transcoder in transcoders() {
        if let Ok(value) = transcoder.transcode(&json) {
            schemas::wire::encode_avro(transcoder.schema(), value).expect("a transcoded value always encodes");
        }
    }
});
