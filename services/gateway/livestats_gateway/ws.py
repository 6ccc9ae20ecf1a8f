"""PLACEHOLDER (being written): WebSocket routes."""

from fastapi import APIRouter

router = APIRouter()
