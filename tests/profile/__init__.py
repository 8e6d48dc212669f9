"""Tests of mtlora_deploy.profile."""
