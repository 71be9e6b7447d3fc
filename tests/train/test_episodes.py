"""Episode sampler properties and the saved evaluation episode lists."""

from __future__ import annotations

import pytest

from fsar_train import EpisodeList, EpisodeSampler, video_list_hash

LABELS = [c for c in range(8) for _ in range(6)]  # 8 classes × 6 videos


def test_sampler_keeps_sampled_class_order_and_labels_queries_by_position():
    sampler = EpisodeSampler(LABELS, n_way=5, n_shot=2, n_query=3, seed=7)
    seen_orders = set()
    for episode in sampler.episodes(50):
        seen_orders.add(episode.class_ids)
        assert len(set(episode.class_ids)) == 5
        assert episode.query_labels == tuple(n for n in range(5) for _ in range(3))
        for n, class_id in enumerate(episode.class_ids):
            assert all(LABELS[p] == class_id for p in episode.support[n])
        for position, label in zip(episode.query, episode.query_labels, strict=True):
            assert LABELS[position] == episode.class_ids[label]
    # Not set order: the same class set appears in different orders, and orders are not sorted.
    assert any(list(order) != sorted(order) for order in seen_orders)


def test_sampler_never_puts_a_video_in_both_support_and_query():
    sampler = EpisodeSampler(LABELS, n_way=4, n_shot=3, n_query=3, seed=1)
    for episode in sampler.episodes(200):
        support = [p for shots in episode.support for p in shots]
        assert len(set(support)) == len(support)
        assert not set(support) & set(episode.query)
        assert len(set(episode.query)) == len(episode.query)


def test_sampler_is_deterministic_by_seed_and_index():
    a = EpisodeSampler(LABELS, n_way=5, n_shot=1, n_query=1, seed=3)
    b = EpisodeSampler(LABELS, n_way=5, n_shot=1, n_query=1, seed=3)
    c = EpisodeSampler(LABELS, n_way=5, n_shot=1, n_query=1, seed=4)
    assert list(a.episodes(20)) == list(b.episodes(20))
    assert list(a.episodes(20)) != list(c.episodes(20))
    assert a.episode(17) == list(b.episodes(20))[17]  # random access equals sequential


def test_sampler_raises_when_class_has_fewer_items_than_shot_plus_query():
    labels = [0] * 6 + [1] * 3 + [2] * 6
    with pytest.raises(ValueError, match=r"n_shot \+ n_query = 1 \+ 5 = 6 videos; 'lifting' has 3"):
        EpisodeSampler(labels, n_way=2, n_shot=1, n_query=5, class_names=["a", "lifting", "c"])
    with pytest.raises(ValueError, match="class 1 has 3"):
        EpisodeSampler(labels, n_way=2, n_shot=1, n_query=5)


def test_sampler_names_a_listed_class_with_no_video_at_all():
    with pytest.raises(ValueError, match="'gone' has 0"):
        EpisodeSampler([0, 0, 2, 2], n_way=2, n_shot=1, n_query=1, class_names=["a", "gone", "c"])


def test_sampler_rejects_more_ways_than_classes_and_non_positive_sizes():
    with pytest.raises(ValueError, match="n_way = 9 needs at least 9 classes"):
        EpisodeSampler(LABELS, n_way=9, n_shot=1, n_query=1)
    with pytest.raises(ValueError, match="n_shot must be a positive integer"):
        EpisodeSampler(LABELS, n_way=2, n_shot=0, n_query=1)


def test_episode_list_round_trips_and_refuses_another_video_list(tmp_path):
    ids = [f"v{i}" for i in range(len(LABELS))]
    made = EpisodeList.sample(LABELS, ids, count=30, n_way=5, n_shot=1, n_query=1, seed=0, split="test")
    path = tmp_path / "episodes.json"
    made.save(path)
    assert EpisodeList.load(path, video_hash=video_list_hash(ids, LABELS)) == made
    with pytest.raises(ValueError, match="sampled from another video list"):
        EpisodeList.load(path, video_hash=video_list_hash(ids[::-1], LABELS))
    again = EpisodeList.load_or_sample(path, LABELS, ids, count=30, n_way=5, n_shot=1, n_query=1, seed=0)
    assert again == made
    with pytest.raises(ValueError, match="this run asks for"):
        EpisodeList.load_or_sample(path, LABELS, ids, count=30, n_way=5, n_shot=5, n_query=1, seed=0)
