"""Walk cases for `keel.posts.repository`."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import func, select
from sqlmodel import col

from keel.posts import repository
from keel.posts.models import Post
from tests.tenancy.walk import World, case


def _theirs(world: World) -> list[UUID]:
    return world.b.rows["posts"]


@case(repository.read_visible)
async def _read_visible(world: World) -> set[UUID]:
    found = set()
    for post_id in world.a.rows["posts"] + _theirs(world):
        post = await repository.read_visible(world.reads, world.a.actor, post_id)
        if post is not None:
            found.add(post["id"])
    assert found == set(world.a.rows["posts"])  # the walk sees the filter, not an empty read
    return found


@case(repository.list_visible_rows)
async def _list_visible_rows(world: World) -> set[UUID]:
    rows = await repository.list_visible_rows(
        world.reads, world.a.actor, repository.PostFilters(), limit=100
    )
    return {row["id"] for row in rows}


@case(repository.get_visible)
async def _get_visible(world: World) -> set[UUID]:
    found = set()
    for post_id in world.a.rows["posts"] + _theirs(world):
        post = await repository.get_visible(world.session, world.a.actor, post_id)
        if post is not None:
            found.add(post.id)
    return found


@case(repository.get_by_id)
async def _get_by_id(world: World) -> set[UUID]:
    found = set()
    for post_id in world.a.rows["posts"] + _theirs(world):
        post = await repository.get_by_id(world.session, world.a.id, post_id)
        if post is not None:
            found.add(post.id)
    return found


@case(repository.save)
async def _save(world: World) -> set[UUID]:
    post = Post(
        tenant_id=world.a.id, author_id=world.a.actor.user_id, title="twin", content="saved"
    )
    saved = await repository.save(world.session, post)
    return {saved.id}


@case(repository.delete)
async def _delete(world: World) -> set[UUID]:
    mine = await repository.get_by_id(world.session, world.a.id, world.a.rows["posts"][0])
    assert mine is not None
    await repository.delete(world.session, mine)
    left = await world.session.scalar(select(func.count()).where(col(Post.tenant_id) == world.b.id))
    assert left == len(_theirs(world))
    return {mine.id}
