"""The synthetic world (docs/DESIGN.md §5): what `smoke` and `tiny` use in place of real data and annotators.

- steps/world/scenes.py: conditions with known ground truth (backgrounds, objects, words; fill / extend / removal);
- steps/world/truth.py: the score of any candidate on every dimension of its task.

``from steps import world`` gives both halves' public names, the way the rest of the library uses them.
"""

from steps.world.scenes import (  # noqa: F401 - the world's public face
    COLOURS,
    DIMENSIONS,
    EXTEND_DEFAULT_PROMPT,
    EXTEND_FILL_GREY,
    REMOVAL_PROMPT,
    SHAPES,
    SUPERSAMPLE,
    TASKS,
    WORDS,
    Sample,
    WorldConfig,
    dimensions_for,
    generate,
    make_sample,
    object_prompt,
    render_object,
    render_word,
    shape_coverage,
    word_coverage,
    word_extent,
)
from steps.world.truth import (  # noqa: F401
    AESTHETICS_EDGE,
    COLOUR_MAX_DIST,
    CONSISTENCY_TAU,
    REMOVAL_TAU,
    SSIM_WIN,
    aesthetics_score,
    dilate,
    score,
    shows_colour,
)
