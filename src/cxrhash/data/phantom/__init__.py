"""Synthetic chest radiographs with known findings and lesion masks.

The phantom is the embedded default dataset: ``cxrhash demo`` trains on it in
minutes on a CPU, and tests use its masks to check that attention maps peak on
lesions. Each image is a PA-view radiograph in the usual convention (air dark,
bone and dense tissue bright, the patient's right on the image's left) built
from analytic anatomy (lungs, heart, mediastinum, spine, ribs, clavicles, lung
vessels) plus up to ``max_findings`` of six findings drawn at random places,
then exposed with a random window, gamma and quantum noise.

Each patient keeps one anatomy (drawn from a per-patient generator) over 1-5
images, so patient-disjoint splits and within-patient similarity behave as in
real archives. Everything is deterministic given ``seed``.

Modules: :mod:`.anatomy` (a patient's anatomy and its static layers),
:mod:`.findings` (one film: findings painted on, then exposed), :mod:`.generate`
(patients and their films), :mod:`.folder` (the dataset folder on disk).
"""

from cxrhash.data.phantom.findings import PHANTOM_FINDINGS
from cxrhash.data.phantom.folder import load_phantom_masks, write_phantom_dataset
from cxrhash.data.phantom.generate import (
    MAX_IMAGES_PER_PATIENT,
    MIN_SIZE,
    PhantomSample,
    generate_phantom,
    phantom_finding_centroids,
)

__all__ = [
    "MAX_IMAGES_PER_PATIENT",
    "MIN_SIZE",
    "PHANTOM_FINDINGS",
    "PhantomSample",
    "generate_phantom",
    "load_phantom_masks",
    "phantom_finding_centroids",
    "write_phantom_dataset",
]
