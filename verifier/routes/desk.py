"""Desk page for agency staff (filled in below)."""

from fastapi import APIRouter

router = APIRouter(tags=["desk"])
