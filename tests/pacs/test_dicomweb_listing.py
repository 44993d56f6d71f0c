"""Listing a live Orthanc over QIDO-RS: filters (modality, body part where present, study
date) and paging."""

from __future__ import annotations

import pytest

from cxrhash.data.dicomweb import DicomWebSource

from .synthetic_dicoms import RECENT, Film


def _expected(films: dict[str, Film], *, since: bool = False) -> set[str]:
    keep = {"ok", "corrupt"} | (set() if since else {"old"})
    return {film.sop_uid for film in films.values() if film.expect in keep}


def test_lists_chest_cr_dx_only(spec: str, films: dict[str, Film]) -> None:
    refs = list(DicomWebSource(spec).instances())
    assert {ref.sop_uid for ref in refs} == _expected(films)
    assert len(refs) == len({ref.sop_uid for ref in refs})  # none twice
    excluded = {films["dx_hand"].sop_uid, films["ct_chest"].sop_uid}
    assert not excluded & {ref.sop_uid for ref in refs}
    by_uid = {ref.sop_uid: ref for ref in refs}
    kept = by_uid[films["dx_no_body_part"].sop_uid]  # no Body Part Examined: kept
    assert kept.body_part is None
    cr = by_uid[films["cr_mono2"].sop_uid]
    assert (cr.study_uid, cr.series_uid, cr.modality) == (
        films["cr_mono2"].uid("study"),
        films["cr_mono2"].uid("series"),
        "CR",
    )


def test_since_filters_on_study_date(spec: str, films: dict[str, Film]) -> None:
    refs = list(DicomWebSource(f"{spec}&since={RECENT}").instances())
    assert {ref.sop_uid for ref in refs} == _expected(films, since=True)


def test_modality_and_body_part_options(spec: str, films: dict[str, Film]) -> None:
    only_cr = {ref.sop_uid for ref in DicomWebSource(f"{spec}&modality=cr").instances()}
    assert only_cr == {film.sop_uid for film in films.values() if film.modality == "CR"}
    assert len(only_cr) == 3
    hands = {ref.sop_uid for ref in DicomWebSource(f"{spec}&body_part=HAND").instances()}
    # HAND, plus the film without a body part (the filter applies where present).
    assert hands == {films["dx_hand"].sop_uid, films["dx_no_body_part"].sop_uid}
    every = {
        ref.sop_uid for ref in DicomWebSource(f"{spec}&body_part=&modality=CR,DX,CT").instances()
    }
    assert every == {film.sop_uid for film in films.values()}


@pytest.mark.parametrize("page_size", [1, 2, 3])
def test_pages_through_the_listing(spec: str, films: dict[str, Film], page_size: int) -> None:
    source = DicomWebSource(f"{spec}&page_size={page_size}")
    answers: list[int] = []
    search = source.client.search_for_instances

    def counted(**kwargs: object) -> list[dict]:
        assert kwargs["limit"] == page_size
        page = search(**kwargs)  # type: ignore[arg-type]
        answers.append(len(page))
        return page

    source.client.search_for_instances = counted  # type: ignore[method-assign]
    refs = [ref.sop_uid for ref in source.instances()]
    assert set(refs) == _expected(films) and len(refs) == len(set(refs))
    assert max(answers) == page_size  # the server really pages...
    assert answers.count(0) == 2  # ...and each modality's query ends on an empty page
    # The server pages over all CR and all DX films (the hand film is dropped here).
    stored = [sum(f.modality == m for f in films.values()) for m in ("CR", "DX")]  # 3, 10
    assert len(answers) == sum(-(-n // page_size) + 1 for n in stored)
