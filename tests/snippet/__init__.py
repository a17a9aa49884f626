"""Tests of the JavaScript tracking code and its template integrations."""
