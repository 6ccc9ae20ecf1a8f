"""PLACEHOLDER (being written): SSE route."""

from fastapi import APIRouter

router = APIRouter()
