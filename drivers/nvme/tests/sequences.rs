//! Random sequences of reads and writes (1 block to 66 pages, at any LBA,
//! through queues of 2 to 16 entries) against the model, checked against
//! a shadow disk kept in the test: every read returns what the shadow
//! says, the namespace ends equal to the shadow, and the device never
//! touched an address it was not given.

mod common;

use common::{addresses, assert_clean, buffer, contents, fill, pattern, up};
use nvme::PAGE_SIZE;
use nvme::model::ModelConfig;
use proptest::prelude::*;

const BLOCKS: u64 = 1024;
const BLOCK: usize = 512;
const POOL_PAGES: usize = 80;
const MAX_BLOCKS: u32 = 66 * (PAGE_SIZE / BLOCK) as u32;

#[derive(Clone, Debug)]
enum Operation {
    Write {
        lba: u64,
        blocks: u32,
        seed: u64,
        first_page: usize,
    },
    Read {
        lba: u64,
        blocks: u32,
        first_page: usize,
    },
}

fn operation() -> impl Strategy<Value = Operation> {
    let extent = (0..BLOCKS).prop_flat_map(|lba| {
        let most = MAX_BLOCKS.min((BLOCKS - lba) as u32);
        (Just(lba), 1..=most)
    });
    prop_oneof![
        (extent.clone(), any::<u64>(), 0..POOL_PAGES).prop_map(
            |((lba, blocks), seed, first_page)| {
                Operation::Write {
                    lba,
                    blocks,
                    seed,
                    first_page,
                }
            }
        ),
        (extent, 0..POOL_PAGES).prop_map(|((lba, blocks), first_page)| Operation::Read {
            lba,
            blocks,
            first_page
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn reads_return_what_was_written(
        depth in prop_oneof![Just(2u16), Just(3), Just(4), Just(16)],
        operations in proptest::collection::vec(operation(), 1..24),
    ) {
        let config = ModelConfig { namespace_blocks: BLOCKS, ..ModelConfig::default() };
        let (model, mut controller) = up(config, depth);
        let mut shadow = pattern(0xd15c, BLOCKS as usize * BLOCK);
        model.fill_namespace(&shadow);
        let pool = buffer(&model, POOL_PAGES);
        for operation in operations {
            let (lba, blocks, first_page) = match operation {
                Operation::Write { lba, blocks, first_page, .. }
                | Operation::Read { lba, blocks, first_page } => (lba, blocks, first_page),
            };
            let length = blocks as usize * BLOCK;
            let pages = length.div_ceil(PAGE_SIZE);
            // Any run of pages of the pool, wrapping round its end: the
            // pages' device addresses are scattered, never contiguous.
            let chosen: Vec<_> = (0..pages).map(|i| pool[(first_page + i) % POOL_PAGES]).collect();
            let start = lba as usize * BLOCK;
            match operation {
                Operation::Write { seed, .. } => {
                    let data = pattern(seed, length);
                    fill(&model, &chosen, &data);
                    controller.write(lba, blocks, &addresses(&chosen))
                        .map_err(|error| TestCaseError::fail(error.to_string()))?;
                    shadow[start..start + length].copy_from_slice(&data);
                }
                Operation::Read { .. } => {
                    fill(&model, &chosen, &vec![0xee; pages * PAGE_SIZE]);
                    controller.read(lba, blocks, &addresses(&chosen))
                        .map_err(|error| TestCaseError::fail(error.to_string()))?;
                    prop_assert_eq!(contents(&model, &chosen, length), &shadow[start..start + length]);
                }
            }
        }
        prop_assert!(model.namespace() == shadow, "the namespace differs from the shadow disk");
        assert_clean(&model);
    }
}
