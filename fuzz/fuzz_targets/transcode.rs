//! The JSON → Avro transcoder against the catalog's schemas, on arbitrary
//! JSON (read as the bridge reads a body): must never panic, and whatever bytes it writes must read back
//! under the schema with apache-avro's own decoder, to the end.
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
    let Ok(json) = schemas::doc::Doc::parse(data) else { return };
    for transcoder in transcoders() {
        let mut bytes = Vec::new();
        if transcoder.encode(&json, &mut bytes).is_ok() {
            let mut rest = bytes.as_slice();
            apache_avro::from_avro_datum(transcoder.schema(), &mut rest, None).expect("what is encoded decodes");
            assert!(rest.is_empty(), "the decoder read every byte written");
        }
    }
});
