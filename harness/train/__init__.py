"""Build-time code: the trainers and data generators that make the embedded models' weights (harness/zoo/weights/)
and the bundled prompt and image sets (datasets/). Each module runs as `python -m harness.train.NAME`.

    draft       smol-draft, distilled from SmolLM2-135M-Instruct                       (make zoo)
    eagle       smol-eagle3 and its reduced heads, with the SpecVocab speculator       (make zoo, make zoo-reduced)
    vlm         tiny-llava: vision tower + projector for the target, a distilled draft  (make zoo-vlm)
    speculator  SpecVocab's speculator for an official EAGLE-3 checkpoint
    frspec      FR-Spec's token frequency list for any tokenizer
    prompts     datasets/zoo-prompts/{train,eval}.jsonl
    vlm_data    the VLM training mixture and datasets/vlm-eval/
    common      what the build scripts share (cache keys, atomic writes, the target's top-k answers, build.json)

These modules may import the runtime (harness, methods); the runtime never imports them (tests/test_layout.py).
"""
