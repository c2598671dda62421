"""Generation stage: devices, model loading and caching, GPU options, batches, conditioning, soundtrack, adherence."""
