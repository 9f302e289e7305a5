//! Shared by the host tests: the driver brought up against the model,
//! data buffers in model DMA memory, and the check that the modelled
//! device never touched an address the driver was not given.
#![allow(dead_code)]

use nvme::model::{Model, ModelConfig, ModelDelay, ModelDma, ModelPage, ModelRegisters};
use nvme::{Config, Controller, Dma, DmaPage, Error, Iova, PAGE_SIZE};

/// The driver under test, over the model.
pub type ModelController = Controller<ModelRegisters, ModelDma, ModelDelay>;

/// Brings the driver up against a model shaped by `config`.
pub fn bring_up(config: ModelConfig, depth: u16) -> (Model, Result<ModelController, Error>) {
    let model = Model::new(config);
    let controller = bring_up_on(&model, depth);
    (model, controller)
}

/// Brings the driver up against `model` (set up by the test first).
pub fn bring_up_on(model: &Model, depth: u16) -> Result<ModelController, Error> {
    bring_up_with(
        model,
        Config {
            queue_depth: depth,
            ..Config::default()
        },
    )
}

/// Brings the driver up against `model` with `config`.
pub fn bring_up_with(model: &Model, config: Config) -> Result<ModelController, Error> {
    Controller::bring_up(model.registers(), model.dma(), model.delay(), config)
}

/// Brings the driver up and expects it to succeed cleanly.
pub fn up(config: ModelConfig, depth: u16) -> (Model, ModelController) {
    let (model, controller) = bring_up(config, depth);
    let controller = controller.unwrap_or_else(|error| panic!("bring-up failed: {error}"));
    assert_clean(&model);
    (model, controller)
}

/// The model saw no access outside the pages handed out and no protocol
/// violation.
pub fn assert_clean(model: &Model) {
    assert_eq!(
        model.faults(),
        [],
        "device accesses outside the driver's pages"
    );
    assert!(
        model.violations().is_empty(),
        "protocol violations: {:?}",
        model.violations()
    );
}

/// `pages` data pages of model DMA memory.
pub fn buffer(model: &Model, pages: usize) -> Vec<DmaPage<ModelPage>> {
    let mut dma = model.dma();
    (0..pages)
        .map(|_| dma.allocate_page().expect("model DMA page"))
        .collect()
}

/// The device addresses of a buffer.
pub fn addresses(buffer: &[DmaPage<ModelPage>]) -> Vec<Iova> {
    buffer.iter().map(|page| page.device_address).collect()
}

/// Copies `bytes` into the buffer from its start.
pub fn fill(model: &Model, buffer: &[DmaPage<ModelPage>], bytes: &[u8]) {
    let mut dma = model.dma();
    for (page, chunk) in buffer.iter().zip(bytes.chunks(PAGE_SIZE)) {
        dma.write(&page.cpu, 0, chunk);
    }
}

/// The buffer's first `length` bytes.
pub fn contents(model: &Model, buffer: &[DmaPage<ModelPage>], length: usize) -> Vec<u8> {
    let mut dma = model.dma();
    let mut bytes = vec![0u8; length];
    for (page, chunk) in buffer.iter().zip(bytes.chunks_mut(PAGE_SIZE)) {
        dma.read(&page.cpu, 0, chunk);
    }
    bytes
}

/// A recognisable pattern: byte `i` of a run seeded with `seed`.
pub fn pattern(seed: u64, length: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
