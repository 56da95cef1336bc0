"""lexalign.serve"""
