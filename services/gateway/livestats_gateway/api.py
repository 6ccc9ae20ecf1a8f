"""PLACEHOLDER (being written): REST routes."""

from fastapi import APIRouter

router = APIRouter()
